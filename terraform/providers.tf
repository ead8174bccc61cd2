# Workspace-level provider. The token can also come from the environment (DATABRICKS_TOKEN) or a
# ~/.databrickscfg profile; it is a sensitive variable so it never appears in plan output.
provider "databricks" {
  host  = var.databricks_host
  token = var.databricks_token
}
