locals {
  job_cluster_key = "energy_platform_cluster"

  # The URL is resolved from the secret scope when the cluster starts; the job definition only holds a reference.
  metadata_db_url_reference = "{{secrets/${databricks_secret_scope.this.name}/${databricks_secret.metadata_db_url.key}}}"

  tags = {
    project    = "energy-platform"
    processing = "batch"
    managed_by = "terraform"
  }
}

resource "databricks_secret_scope" "this" {
  name = "energy-platform"
}

resource "databricks_secret" "metadata_db_url" {
  scope        = databricks_secret_scope.this.name
  key          = "metadata-db-url"
  string_value = var.metadata_db_url
}

resource "databricks_cluster_policy" "this" {
  name        = "${var.job_name} job clusters"
  description = "Job clusters of the Energy Data Platform: bounded autoscaling, Databricks execution mode."

  definition = jsonencode({
    "cluster_type" : {
      "type" : "fixed",
      "value" : "job"
    },
    "autoscale.max_workers" : {
      "type" : "range",
      "maxValue" : var.max_workers,
      "defaultValue" : var.max_workers
    },
    "spark_env_vars.EXECUTION_MODE" : {
      "type" : "fixed",
      "value" : "databricks"
    }
  })
}

resource "databricks_job" "this" {
  name                = var.job_name
  description         = "Energy Data Platform: bronze -> silver -> gold for one source, on a job cluster, from the project wheel."
  timeout_seconds     = 7200
  max_concurrent_runs = 1
  tags                = local.tags

  job_cluster {
    job_cluster_key = local.job_cluster_key

    new_cluster {
      spark_version      = var.spark_version
      node_type_id       = var.node_type_id
      policy_id          = databricks_cluster_policy.this.id
      data_security_mode = "SINGLE_USER"

      autoscale {
        min_workers = var.min_workers
        max_workers = var.max_workers
      }

      spark_conf = {
        "spark.sql.session.timeZone"   = "UTC"
        "spark.sql.shuffle.partitions" = "auto"
      }

      spark_env_vars = {
        EXECUTION_MODE  = "databricks"
        PROCESSING_MODE = "batch"
        STORAGE_PATH    = var.storage_path
        METADATA_DB_URL = local.metadata_db_url_reference
        LOG_FORMAT      = "json"
      }
    }
  }

  task {
    task_key        = "run_batch"
    job_cluster_key = local.job_cluster_key
    max_retries     = 0

    python_wheel_task {
      package_name = "energy-platform"
      entry_point  = "energy-platform"
      parameters   = ["run-batch", "--source", "meter_readings", "--input", var.landing_path]
    }

    library {
      whl = var.wheel_path
    }
  }

  email_notifications {
    on_failure = var.notification_emails
  }

  lifecycle {
    precondition {
      condition     = var.max_workers > var.min_workers
      error_message = "max_workers must be greater than min_workers."
    }
  }
}
