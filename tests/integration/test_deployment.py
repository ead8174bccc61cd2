"""Static checks of the Databricks deployment files against the package they deploy.

`databricks-job.json` (Jobs API 2.1), `databricks.yml` (Asset Bundle) and `terraform/` must parse,
run an entry point the wheel really has with arguments the CLI really accepts, and set only
environment variables that `Settings` reads. No network, no Spark.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hcl2
import pytest
import typer.main
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

import app.cli
from app.infrastructure.settings import Settings, environment_variable_names

ROOT = Path(__file__).resolve().parents[2]
JOB_JSON = ROOT / "databricks-job.json"
BUNDLE_YML = ROOT / "databricks.yml"
TERRAFORM_DIR = ROOT / "terraform"

#: Sensitive by name: these variables must never show in plan output.
SECRET_NAME = re.compile(r"token|password|secret|db_url", re.IGNORECASE)
VAR_REFERENCE = re.compile(r"(?<![\w.])var\.([A-Za-z_][\w-]*)")
BUNDLE_VAR_REFERENCE = re.compile(r"\$\{var\.([A-Za-z_][\w-]*)\}")
RESOURCE_REFERENCE = re.compile(r"(?<![\w.])(databricks_[a-z0-9_]+)\.([A-Za-z_][\w-]*)\.")
#: {{secrets/<scope>/<key>}}; scope and key may be interpolated (${var.x}, ${resource.attr}).
SECRET_REFERENCE = re.compile(r"\{\{secrets/(?:\$\{[^}]+\}|[\w.-]+)/(?:\$\{[^}]+\}|[\w.-]+)\}\}")
LOCAL_REFERENCE = re.compile(r"^\$\{local\.([A-Za-z_][\w-]*)\}$")
WHOLE_VAR_REFERENCE = re.compile(r"^\$\{var\.([A-Za-z_][\w-]*)\}$")
#: A Databricks Runtime as job clusters name it: `17.3.x-scala2.13` (no ML, GPU or Photon variant).
RUNTIME_NAME = re.compile(r"^(\d+\.\d+)\.x-scala2\.13$")

#: Databricks Runtime -> the Apache Spark it ships (Databricks Runtime release notes). When the jobs
#: move to another runtime, add it here and move the `spark` extra's pins to its Spark.
RUNTIME_SPARK = {"17.3": "4.0.0"}
#: Spark minor version -> the delta-spark release line built for it (its jars carry no Spark suffix).
DELTA_FOR_SPARK = {"4.0": "4.0"}
#: Packages the cluster's runtime provides: the job's wheel must never require them.
RUNTIME_PROVIDED = {"pyspark", "delta-spark"}
#: Where the HTTP service lives: only these may import the `service` extra's packages.
SERVICE_MODULES = ("app/main.py", "app/api/")


# --- loading ---------------------------------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)


def _unquote(value: str) -> str:
    """python-hcl2 keeps the quotes of string literals and quoted keys: '"x"' -> 'x'."""
    if len(value) >= 2 and value.startswith('"') and value.endswith('"'):
        return value[1:-1]
    return value


def _clean(node: Any) -> Any:
    """Parsed HCL without quotes around literals and without the parser's `__is_block__`/`__comments__` keys."""
    if isinstance(node, dict):
        return {_unquote(k): _clean(v) for k, v in node.items() if not k.startswith("__")}
    if isinstance(node, list):
        return [_clean(item) for item in node]
    if isinstance(node, str):
        return _unquote(node)
    return node


def _resolve_locals(node: Any, local_values: dict[str, Any]) -> Any:
    """Replace values that are exactly `${local.NAME}` by that local's value."""
    if isinstance(node, dict):
        return {k: _resolve_locals(v, local_values) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve_locals(item, local_values) for item in node]
    if isinstance(node, str) and (match := LOCAL_REFERENCE.match(node)):
        return local_values[match.group(1)]
    return node


def _hcl(path: Path) -> dict[str, Any]:
    with path.open(encoding="utf-8") as fh:
        parsed: dict[str, Any] = _clean(hcl2.load(fh))
    return parsed


def _tf_blocks(parsed: dict[str, Any], kind: str) -> dict[str, Any]:
    """`variable "x" {...}` / `output "x" {...}` blocks by name."""
    return {name: body for block in parsed.get(kind, []) for name, body in block.items()}


def _tf_resources(parsed: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """`resource "type" "name" {...}` blocks by (type, name)."""
    return {
        (kind, name): body
        for block in parsed.get("resource", [])
        for kind, named in block.items()
        for name, body in named.items()
    }


def _tf_files() -> list[Path]:
    return sorted(TERRAFORM_DIR.glob("*.tf"))


def _json_jobs() -> list[dict[str, Any]]:
    return [json.loads(JOB_JSON.read_text(encoding="utf-8"))]


def _bundle() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(BUNDLE_YML.read_text(encoding="utf-8"))
    return loaded


def _bundle_jobs() -> list[dict[str, Any]]:
    return list(_bundle()["resources"]["jobs"].values())


def _terraform_jobs() -> list[dict[str, Any]]:
    """`databricks_job` resources reshaped like Jobs API bodies (blocks of one become objects)."""
    main = _hcl(TERRAFORM_DIR / "main.tf")
    local_values = {k: v for block in main.get("locals", []) for k, v in block.items()}
    jobs = []
    for (kind, _), body in _tf_resources(main).items():
        if kind != "databricks_job":
            continue
        job = _resolve_locals(body, local_values)
        jobs.append(
            {
                **job,
                "job_clusters": [
                    {"job_cluster_key": cluster["job_cluster_key"], "new_cluster": cluster["new_cluster"][0]}
                    for cluster in job.get("job_cluster", [])
                ],
                "tasks": [
                    {
                        **task,
                        **{k: task[k][0] for k in task if k.endswith("_task")},
                        "libraries": task.get("library", []),
                    }
                    for task in job.get("task", [])
                ],
            }
        )
    return jobs


JOB_SOURCES: dict[str, Callable[[], list[dict[str, Any]]]] = {
    "databricks-job.json": _json_jobs,
    "databricks.yml": _bundle_jobs,
    "terraform/main.tf": _terraform_jobs,
}


@pytest.fixture(params=sorted(JOB_SOURCES))
def jobs(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    loaded = JOB_SOURCES[request.param]()
    assert loaded, f"{request.param} defines no job"
    return loaded


def _tasks(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tasks = [task for job in jobs for task in job.get("tasks", [])]
    assert tasks, "no tasks"
    return tasks


def _env_vars(jobs: list[dict[str, Any]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for job in jobs:
        for cluster in job.get("job_clusters", []):
            env.update(cluster["new_cluster"].get("spark_env_vars", {}))
    assert env, "no spark_env_vars on any job cluster"
    return env


# --- the CLI and settings the jobs run against -----------------------------------------------


def _run_batch_command() -> Any:
    """The Click command behind `energy-platform run-batch` (Typer ships its own Click, so it is duck-typed)."""
    group: Any = typer.main.get_command(app.cli.app)
    commands = getattr(group, "commands", {})
    assert "run-batch" in commands, f"commands: {sorted(commands)}"
    return commands["run-batch"]


def _option_names(command: Any) -> set[str]:
    return {name for param in command.params for name in (*param.opts, *param.secondary_opts)}


# --- every deployment: the wheel task ---------------------------------------------------------


def test_every_task_runs_an_entry_point_of_this_wheel(jobs: list[dict[str, Any]]) -> None:
    project = _pyproject()["project"]
    scripts = project["scripts"]
    for task in _tasks(jobs):
        wheel_task = task.get("python_wheel_task")
        assert wheel_task, f"task {task.get('task_key')} is not a python_wheel_task"
        assert wheel_task["package_name"] == project["name"]
        assert wheel_task["entry_point"] in scripts, f"{wheel_task['entry_point']!r} not in {sorted(scripts)}"

        module_name, _, attribute = scripts[wheel_task["entry_point"]].partition(":")
        target: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            target = getattr(target, part)
        assert callable(target)

        wheels = [library["whl"] for library in task.get("libraries", []) if "whl" in library]
        assert wheels, f"task {task.get('task_key')} installs no wheel"


def test_task_parameters_are_accepted_by_the_cli(jobs: list[dict[str, Any]]) -> None:
    command = _run_batch_command()
    options = _option_names(command)
    for task in _tasks(jobs):
        parameters = task["python_wheel_task"]["parameters"]
        assert parameters[0] == "run-batch"
        assert "--source" in parameters
        assert "--input" in parameters
        assert {"--source", "--input"} <= options
        unknown = {p for p in parameters[1:] if p.startswith("--")} - options
        assert not unknown, f"run-batch has no option(s) {sorted(unknown)}"
        # Click parses the arguments exactly as the wheel's entry point will (without running the command).
        context = command.make_context("run-batch", list(parameters[1:]))
        assert context.params["source"] == parameters[parameters.index("--source") + 1]
        assert context.params["input_path"] == parameters[parameters.index("--input") + 1]


def test_job_environment_names_are_settings(jobs: list[dict[str, Any]]) -> None:
    known = environment_variable_names()
    env = _env_vars(jobs)
    unknown = set(env) - known
    assert not unknown, f"Settings reads no {sorted(unknown)}; it reads {sorted(known)}"


def test_job_environment_values_are_valid_settings(jobs: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch) -> None:
    for name in environment_variable_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in _env_vars(jobs).items():
        monkeypatch.setenv(name, str(value))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.execution_mode == "databricks"
    assert settings.processing_mode == "batch"


def test_metadata_db_url_comes_from_a_secret_scope(jobs: list[dict[str, Any]]) -> None:
    value = _env_vars(jobs)["METADATA_DB_URL"]
    assert SECRET_REFERENCE.fullmatch(value), f"METADATA_DB_URL must be a {{{{secrets/scope/key}}}} reference: {value}"


def test_job_clusters_compute_in_utc(jobs: list[dict[str, Any]]) -> None:
    clusters = [cluster for job in jobs for cluster in job.get("job_clusters", [])]
    assert clusters
    for cluster in clusters:
        assert cluster["new_cluster"]["spark_conf"]["spark.sql.session.timeZone"] == "UTC"
    cluster_keys = {cluster["job_cluster_key"] for cluster in clusters}
    for task in _tasks(jobs):
        assert task["job_cluster_key"] in cluster_keys


def test_json_and_bundle_deploy_the_same_job() -> None:
    (job,) = _json_jobs()
    (bundled,) = _bundle_jobs()
    assert bundled["name"] == job["name"]
    assert [p["name"] for p in bundled["parameters"]] == [p["name"] for p in job["parameters"]]
    assert [t["python_wheel_task"] for t in bundled["tasks"]] == [t["python_wheel_task"] for t in job["tasks"]]
    assert set(_env_vars([bundled])) == set(_env_vars([job]))
    clusters = [c["new_cluster"]["spark_conf"] for c in job["job_clusters"]]
    assert [c["new_cluster"]["spark_conf"] for c in bundled["job_clusters"]] == clusters


# --- databricks.yml ----------------------------------------------------------------------------


def test_bundle_variable_references_are_declared() -> None:
    referenced = set(BUNDLE_VAR_REFERENCE.findall(BUNDLE_YML.read_text(encoding="utf-8")))
    declared = set(_bundle().get("variables", {}))
    assert referenced, "no ${var.*} reference found"
    assert referenced <= declared, f"undeclared: {sorted(referenced - declared)}"
    assert declared <= referenced, f"declared but unused: {sorted(declared - referenced)}"


def test_bundle_builds_and_installs_the_wheel() -> None:
    bundle = _bundle()
    wheels = [artifact for artifact in bundle["artifacts"].values() if artifact.get("type") == "whl"]
    assert wheels, "no whl artifact"
    assert all(artifact.get("build") and artifact.get("path") == "." for artifact in wheels)
    for task in _tasks(_bundle_jobs()):
        assert any(str(library.get("whl", "")).endswith(".whl") for library in task["libraries"])


def test_bundle_targets() -> None:
    targets = _bundle()["targets"]
    assert targets["dev"]["mode"] == "development"
    assert targets["dev"]["default"] is True
    assert targets["prod"]["mode"] == "production"


# --- the runtime the jobs pin, and the dependencies the wheel brings ---------------------------


def _minor(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _requirements(names: list[str]) -> dict[str, Requirement]:
    return {canonicalize_name(requirement.name): requirement for requirement in map(Requirement, names)}


def _extra(name: str) -> dict[str, Requirement]:
    return _requirements(_pyproject()["project"]["optional-dependencies"][name])


def _pinned(requirement: Requirement) -> str:
    (specifier,) = requirement.specifier
    assert specifier.operator == "==", f"{requirement} must be pinned with =="
    return specifier.version


def _job_runtimes() -> dict[str, set[str]]:
    """`spark_version` of every job cluster, by file; Terraform's `${var.x}` is the variable's default."""
    defaults = {
        name: body.get("default") for name, body in _tf_blocks(_hcl(TERRAFORM_DIR / "variables.tf"), "variable").items()
    }
    runtimes: dict[str, set[str]] = {}
    for source, load in JOB_SOURCES.items():
        for job in load():
            for cluster in job.get("job_clusters", []):
                value = str(cluster["new_cluster"]["spark_version"])
                if match := WHOLE_VAR_REFERENCE.match(value):
                    value = str(defaults[match.group(1)])
                runtimes.setdefault(source, set()).add(value)
    return runtimes


def _job_runtime() -> str:
    runtimes = _job_runtimes()
    assert set(runtimes) == set(JOB_SOURCES), f"no job cluster in {sorted(set(JOB_SOURCES) - set(runtimes))}"
    pinned = set().union(*runtimes.values())
    assert len(pinned) == 1, f"the job definitions run different runtimes: {runtimes}"
    (runtime,) = pinned
    return runtime


def test_every_job_runs_one_known_databricks_runtime() -> None:
    runtime = _job_runtime()
    match = RUNTIME_NAME.match(runtime)
    assert match, f"{runtime!r} is not a standard Scala 2.13 runtime"
    assert match.group(1) in RUNTIME_SPARK, f"Databricks Runtime {match.group(1)}: add its Spark to RUNTIME_SPARK"


def test_the_spark_extra_is_the_spark_of_the_job_runtime() -> None:
    """The tests' local Spark is the job runtime's minor version, with the Delta Lake release built for it."""
    match = RUNTIME_NAME.match(_job_runtime())
    assert match
    runtime_spark = RUNTIME_SPARK[match.group(1)]
    spark = _extra("spark")
    assert set(spark) == RUNTIME_PROVIDED
    pyspark = _pinned(spark["pyspark"])
    assert _minor(pyspark) == _minor(runtime_spark), f"pyspark {pyspark}; the job runs Spark {runtime_spark}"
    delta = _pinned(spark["delta-spark"])
    assert _minor(delta) == DELTA_FOR_SPARK[_minor(pyspark)], f"delta-spark {delta} is not built for Spark {pyspark}"


def test_dev_installs_the_local_spark_and_the_service() -> None:
    (own,) = [req for name, req in _extra("dev").items() if name == canonicalize_name(_pyproject()["project"]["name"])]
    assert {"spark", "service"} <= own.extras


def test_the_installed_spark_is_the_pinned_one() -> None:
    """The `spark` tests run on what the `spark` extra pins (a stale environment fails here, not on a cluster)."""
    for name, requirement in _extra("spark").items():
        try:
            installed = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
        assert installed == _pinned(requirement), f"{name} {installed} is installed; pyproject pins {requirement}"


def test_the_job_wheel_brings_neither_spark_nor_the_service() -> None:
    """The cluster installs the bare wheel: the core and the `databricks` extra."""
    installed_on_the_cluster = _requirements(_pyproject()["project"]["dependencies"]) | _extra("databricks")
    assert not set(installed_on_the_cluster) & RUNTIME_PROVIDED, "the runtime provides Spark and Delta Lake"
    service = set(_extra("service"))
    assert service, "no service extra"
    assert not set(installed_on_the_cluster) & service, f"{sorted(service)} belong to the service extra"


def test_only_the_service_imports_the_service_packages() -> None:
    """Everything but app/main.py and app/api/ runs without the `service` extra (the batch job on a cluster)."""
    packages = {name.replace("-", "_") for name in _extra("service")}
    offenders = []
    for path in sorted((ROOT / "app").rglob("*.py")):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith(SERVICE_MODULES):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            offenders += [f"{relative}:{node.lineno} {name}" for name in names if name.split(".")[0] in packages]
    assert not offenders, offenders


# --- terraform/ -------------------------------------------------------------------------------


def test_terraform_files_parse() -> None:
    names = {path.name for path in _tf_files()}
    assert {"versions.tf", "providers.tf", "variables.tf", "main.tf", "outputs.tf"} <= names
    for path in _tf_files():
        assert _hcl(path), f"{path.name} is empty"


def test_terraform_pins_the_databricks_provider() -> None:
    (settings,) = _hcl(TERRAFORM_DIR / "versions.tf")["terraform"]
    providers = {name: spec for block in settings["required_providers"] for name, spec in block.items()}
    assert providers["databricks"]["source"] == "databricks/databricks"
    assert providers["databricks"]["version"]


def test_terraform_variable_references_are_declared() -> None:
    referenced = {name for path in _tf_files() for name in VAR_REFERENCE.findall(path.read_text(encoding="utf-8"))}
    declared = set(_tf_blocks(_hcl(TERRAFORM_DIR / "variables.tf"), "variable"))
    assert referenced, "no var.* reference found"
    assert referenced <= declared, f"undeclared: {sorted(referenced - declared)}"
    assert declared <= referenced, f"declared but unused: {sorted(declared - referenced)}"


def test_terraform_resource_references_are_declared() -> None:
    declared = set(_tf_resources(_hcl(TERRAFORM_DIR / "main.tf")))
    referenced = {ref for path in _tf_files() for ref in RESOURCE_REFERENCE.findall(path.read_text(encoding="utf-8"))}
    assert referenced, "no resource reference found"
    assert referenced <= declared, f"undeclared: {sorted(referenced - declared)}"


def test_terraform_outputs_reference_declared_resources() -> None:
    declared = set(_tf_resources(_hcl(TERRAFORM_DIR / "main.tf")))
    outputs = _tf_blocks(_hcl(TERRAFORM_DIR / "outputs.tf"), "output")
    assert set(outputs) == {"job_id", "job_url", "secret_scope_name", "cluster_policy_id"}
    for name, body in outputs.items():
        referenced = set(RESOURCE_REFERENCE.findall(str(body["value"])))
        assert referenced, f"output {name} references no resource"
        assert referenced <= declared, f"output {name}: undeclared {sorted(referenced - declared)}"


def test_terraform_secrets_are_sensitive_and_kept_in_the_scope() -> None:
    variables = _tf_blocks(_hcl(TERRAFORM_DIR / "variables.tf"), "variable")
    secret_like = {name for name in variables if SECRET_NAME.search(name)}
    assert {"databricks_token", "metadata_db_url"} <= secret_like
    for name in secret_like:
        assert variables[name].get("sensitive") is True, f"variable {name} must be sensitive = true"

    resources = _tf_resources(_hcl(TERRAFORM_DIR / "main.tf"))
    stored = [body for (kind, _), body in resources.items() if kind == "databricks_secret"]
    assert [body["string_value"] for body in stored] == ["${var.metadata_db_url}"]
    (job,) = _terraform_jobs()
    assert "var.metadata_db_url" not in json.dumps(job), "the job must reference the secret, not hold it"
