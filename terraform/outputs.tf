output "job_id" {
  description = "ID of the batch job (for `databricks jobs run-now`)."
  value       = databricks_job.this.id
}

output "job_url" {
  description = "URL of the batch job in the workspace."
  value       = databricks_job.this.url
}

output "secret_scope_name" {
  description = "Secret scope holding metadata-db-url."
  value       = databricks_secret_scope.this.name
}

output "cluster_policy_id" {
  description = "Policy the job cluster is created under."
  value       = databricks_cluster_policy.this.id
}
