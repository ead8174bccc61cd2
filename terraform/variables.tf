variable "databricks_host" {
  description = "Workspace URL, e.g. https://adb-1234567890123456.7.azuredatabricks.net."
  type        = string
}

variable "databricks_token" {
  description = "Personal access token or service principal token used by Terraform to call the workspace."
  type        = string
  sensitive   = true
}

variable "storage_path" {
  description = "Root of the lake (STORAGE_PATH): tables live in <storage_path>/<layer>/<table>."
  type        = string
  default     = "/Volumes/energy/lake/tables"
}

variable "landing_path" {
  description = "Input of each run (file, folder or glob), passed to run-batch --input."
  type        = string
  default     = "/Volumes/energy/landing/meter_readings"
}

variable "wheel_path" {
  description = "Location of the energy-platform wheel the task installs (Unity Catalog volume or workspace file)."
  type        = string
  default     = "/Volumes/energy/artifacts/wheels/energy_platform-0.1.0-py3-none-any.whl"
}

variable "metadata_db_url" {
  description = "SQLAlchemy URL of the batch metadata store. Stored in the secret scope; the job only references it."
  type        = string
  sensitive   = true
}

variable "node_type_id" {
  description = "Node type of the job cluster's driver and workers."
  type        = string
  default     = "Standard_D4ds_v5"
}

variable "spark_version" {
  description = "Databricks Runtime of the job cluster: 17.3 LTS runs Spark 4.0 on Scala 2.13. The tests run the Spark pinned in pyproject.toml's spark extra: move both together."
  type        = string
  default     = "17.3.x-scala2.13"
}

variable "min_workers" {
  description = "Autoscaling lower bound of the job cluster."
  type        = number
  default     = 1

  validation {
    condition     = var.min_workers >= 1
    error_message = "min_workers must be at least 1."
  }
}

variable "max_workers" {
  description = "Autoscaling upper bound of the job cluster; the cluster policy caps clusters at this value."
  type        = number
  default     = 4

  validation {
    condition     = var.max_workers >= 2
    error_message = "max_workers must be at least 2 (it has to be greater than min_workers)."
  }
}

variable "job_name" {
  description = "Name of the Databricks job."
  type        = string
  default     = "energy-platform-batch"
}

variable "notification_emails" {
  description = "Addresses notified when a run fails."
  type        = list(string)
  default     = []
}
