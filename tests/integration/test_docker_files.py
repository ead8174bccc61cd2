"""Static checks of the container files against the package they ship.

`Dockerfile`, `.dockerignore` and `docker-compose.yml` must build from files the repository has, run an
entry point the package really has, and set only environment variables that `Settings` reads. No Docker
engine: the one test that needs the `docker compose` client skips when it is not installed.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from sqlalchemy.engine import make_url

import app.cli
from app.infrastructure.settings import Settings, environment_variable_names
from app.main import app as api

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
COMPOSE_FILE = ROOT / "docker-compose.yml"

API_PORT = 8000
PLATFORM_SERVICES = ("app", "batch")


# --- Dockerfile ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of an exec-form CMD/ENTRYPOINT/RUN, None for the shell form."""
        text = self.args
        if self.keyword == "HEALTHCHECK":  # HEALTHCHECK [--options] CMD <command>
            text = re.sub(r"^(?:--\S+\s+)*CMD\s+", "", text)
        if not text.startswith("["):
            return None
        value = json.loads(text)
        assert isinstance(value, list) and all(isinstance(v, str) for v in value), self
        return value


def parse_dockerfile(text: str) -> list[Instruction]:
    """Instructions in order, `\\` continuations joined; comment lines (also inside a continuation) dropped."""
    instructions: list[Instruction] = []
    parts: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not parts and (not line or line.startswith("#")):
            continue
        if parts and line.startswith("#"):
            continue
        if not parts:
            start = number
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        joined = " ".join(p for p in parts if p)
        parts = []
        keyword, _, args = joined.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
    assert not parts, "the Dockerfile ends inside a `\\` continuation"
    return instructions


@dataclass(frozen=True)
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction]

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def last(self, keyword: str) -> Instruction | None:
        found = self.all(keyword)
        return found[-1] if found else None

    def env(self) -> dict[str, str]:
        """ENV of this stage, `KEY=value` pairs (the legacy `ENV KEY value` form too)."""
        values: dict[str, str] = {}
        for instruction in self.all("ENV"):
            words = shlex.split(instruction.args)
            if words and "=" not in words[0]:
                values[words[0]] = " ".join(words[1:])
                continue
            for word in words:
                key, _, value = word.partition("=")
                values[key] = value
        return values


def stages(instructions: list[Instruction]) -> list[Stage]:
    found: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = [w for w in instruction.args.split() if not w.startswith("--")]
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            found.append(Stage(words[0], name, []))
        elif found:
            found[-1].instructions.append(instruction)
        else:
            assert instruction.keyword == "ARG", f"{instruction} before the first FROM"
    return found


def copy_sources(instruction: Instruction) -> tuple[dict[str, str], list[str], str]:
    """Flags, sources and destination of a COPY/ADD (shell or JSON form)."""
    args = instruction.args
    flags: dict[str, str] = {}
    while args.startswith("--"):
        flag, _, args = args.partition(" ")
        key, _, value = flag[2:].partition("=")
        flags[key] = value
        args = args.strip()
    words = json.loads(args) if args.startswith("[") else shlex.split(args)
    assert len(words) >= 2, f"{instruction}: needs a source and a destination"
    return flags, words[:-1], words[-1]


@pytest.fixture(scope="module")
def dockerfile() -> list[Stage]:
    assert DOCKERFILE.is_file(), f"no {DOCKERFILE}"
    return stages(parse_dockerfile(DOCKERFILE.read_text(encoding="utf-8")))


@pytest.fixture(scope="module")
def runtime(dockerfile: list[Stage]) -> Stage:
    return dockerfile[-1]


def test_dockerfile_parser_joins_continuations_and_skips_comments() -> None:
    parsed = parse_dockerfile("# syntax=docker/dockerfile:1\nFROM a AS b\nRUN x \\\n  # note\n  && y\nUSER app\n")
    assert [(i.keyword, i.args) for i in parsed] == [("FROM", "a AS b"), ("RUN", "x && y"), ("USER", "app")]


def test_dockerfile_is_multi_stage(dockerfile: list[Stage]) -> None:
    assert len(dockerfile) >= 2, f"one stage only: {[s.base for s in dockerfile]}"
    assert all(s.base.startswith("python:3.11") for s in dockerfile), [s.base for s in dockerfile]
    names = [s.name for s in dockerfile if s.name]
    assert len(names) == len(set(names)), f"stage names repeat: {names}"


def test_runtime_copies_only_from_earlier_stages(dockerfile: list[Stage], runtime: Stage) -> None:
    earlier = {s.name for s in dockerfile[:-1] if s.name} | {str(i) for i in range(len(dockerfile) - 1)}
    copies_from = [copy_sources(c)[0].get("from") for c in runtime.all("COPY")]
    assert any(copies_from), "the runtime stage copies nothing from the build stage"
    unknown = {f for f in copies_from if f and f not in earlier}
    assert not unknown, f"COPY --from {sorted(unknown)}: the earlier stages are {sorted(earlier)}"


def test_runtime_runs_as_a_non_root_user(runtime: Stage) -> None:
    user = runtime.last("USER")
    assert user is not None, "the final stage has no USER: the container would run as root"
    name = user.args.split(":")[0].strip()
    assert name not in {"root", "0", ""}, f"final USER is {user.args!r}"
    assert any(name in run.args for run in runtime.all("RUN")), f"user {name!r} is never created in the final stage"


def test_build_copies_files_that_exist(dockerfile: list[Stage]) -> None:
    missing = []
    for stage in dockerfile:
        for instruction in stage.all("COPY") + stage.all("ADD"):
            flags, sources, _ = copy_sources(instruction)
            if "from" in flags:
                continue
            missing += [f"line {instruction.line}: {s}" for s in sources if not (ROOT / s).exists()]
    assert not missing, f"COPY sources not in the repository: {missing}"


def test_build_copies_everything_the_wheel_is_built_from(dockerfile: list[Stage]) -> None:
    project = _pyproject()
    needed = {"pyproject.toml", project["project"]["readme"]}
    needed |= {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {
        s.strip("./")
        for stage in dockerfile[:-1]
        for instruction in stage.all("COPY")
        if "from" not in copy_sources(instruction)[0]
        for s in copy_sources(instruction)[1]
    }
    assert needed <= copied, f"the build stage does not copy {sorted(needed - copied)}"


def test_build_stage_builds_a_wheel_into_the_venv_the_runtime_copies(dockerfile: list[Stage], runtime: Stage) -> None:
    build_runs = " ".join(r.args for s in dockerfile[:-1] for r in s.all("RUN"))
    assert re.search(r"pip wheel\b.*--no-deps", build_runs), build_runs
    assert "python -m venv /opt/venv" in build_runs, build_runs
    assert re.search(r"/opt/venv/bin/pip install\b.*\.whl", build_runs), build_runs
    pip_commands = [
        command.strip()
        for s in dockerfile
        for r in s.all("RUN")
        for command in re.split(r"&&|;|\|\|", r.args)
        if re.search(r"\bpip (?:install|wheel)\b", command)
    ]
    assert pip_commands, "no pip command"
    cached = [c for c in pip_commands if "--no-cache-dir" not in c]
    assert not cached, f"pip without --no-cache-dir keeps its cache in the image: {cached}"
    copies = [copy_sources(c) for c in runtime.all("COPY")]
    assert any(src == ["/opt/venv"] for flags, src, _ in copies if "from" in flags), copies


def test_runtime_environment(runtime: Stage) -> None:
    env = runtime.env()
    assert env.get("PATH", "").startswith("/opt/venv/bin:"), f"the venv's scripts are not on PATH: {env}"
    assert env.get("PYTHONDONTWRITEBYTECODE") == "1"
    assert env.get("PYTHONUNBUFFERED") == "1"
    assert env.get("DATA_DIR") == "/data", "DATA_DIR must point at the directory the image prepares for the lake"
    workdir = runtime.last("WORKDIR")
    assert workdir is not None and workdir.args == "/home/app"
    assert any("/data" in r.args and "chown" in r.args for r in runtime.all("RUN")), "/data is not owned by the user"


def test_runtime_exposes_the_api_port(runtime: Stage) -> None:
    exposed = {p.split("/")[0] for e in runtime.all("EXPOSE") for p in e.args.split()}
    assert str(API_PORT) in exposed, f"EXPOSE {sorted(exposed)}"


def test_healthcheck_asks_the_health_endpoint(runtime: Stage) -> None:
    check = runtime.last("HEALTHCHECK")
    assert check is not None, "no HEALTHCHECK"
    assert not check.args.upper().startswith("NONE"), "HEALTHCHECK NONE"
    for option in ("interval", "timeout", "start-period", "retries"):
        assert f"--{option}=" in check.args, f"HEALTHCHECK without --{option}"
    command = check.exec_form()
    assert command is not None, "use the exec form so no shell is needed"
    assert command[0] == "python", f"slim images have no curl: {command}"
    assert f"127.0.0.1:{API_PORT}/health" in " ".join(command), command
    assert "get" in api.openapi()["paths"].get("/health", {}), "the API has no GET /health"


def test_cmd_serves_the_api_with_uvicorn(runtime: Stage) -> None:
    cmd = runtime.last("CMD")
    assert cmd is not None, "no CMD"
    command = cmd.exec_form()
    assert command is not None, "use the exec form so uvicorn gets the signals"
    assert command[:2] == ["uvicorn", "app.main:app"], command
    options = dict(zip(command[2::2], command[3::2], strict=False))
    assert options.get("--host") == "0.0.0.0", f"bind all interfaces or the published port is dead: {command}"
    assert options.get("--port") == str(API_PORT), command
    assert runtime.last("ENTRYPOINT") is None, "an ENTRYPOINT would swallow `energy-platform ...` commands"


def test_image_labels_match_the_project(runtime: Stage) -> None:
    labels = dict(
        word.partition("=")[::2] for label in runtime.all("LABEL") for word in shlex.split(label.args) if "=" in word
    )
    project = _pyproject()["project"]
    assert labels.get("org.opencontainers.image.title") == project["name"], labels
    assert labels.get("org.opencontainers.image.version") == project["version"], labels


# --- .dockerignore ---------------------------------------------------------------------------------


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash-separated paths."""
    out, i = "", 0
    pattern = pattern.strip("/")
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str, rules: list[tuple[bool, re.Pattern[str]]]) -> bool:
    """Whether Docker leaves `path` out of the context: the last matching rule wins; a match on a parent counts."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negated, regex in rules:
        if any(regex.fullmatch(c) for c in candidates):
            ignored = not negated
    return ignored


@pytest.fixture(scope="module")
def ignore_rules() -> list[tuple[bool, re.Pattern[str]]]:
    assert DOCKERIGNORE.is_file(), f"no {DOCKERIGNORE}"
    rules = []
    for raw in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            rules.append((line.startswith("!"), _ignore_regex(line.lstrip("!"))))
    return rules


def test_dockerignore_matcher() -> None:
    rules = [(False, _ignore_regex(p)) for p in ("**/__pycache__", "data", "*.egg-info")]
    assert _ignored("app/x/__pycache__/m.pyc", rules)
    assert _ignored("__pycache__", rules)
    assert _ignored("data/bronze/t", rules)
    assert not _ignored("app/data.py", rules)
    assert not _ignored("app/sample_data/x.csv", rules)
    assert not _ignored("app/x", [*rules, (False, _ignore_regex("app")), (True, _ignore_regex("app"))])


def test_dockerignore_keeps_secrets_and_local_state_out(ignore_rules: list[tuple[bool, re.Pattern[str]]]) -> None:
    must_ignore = [
        ".env",
        ".venv/bin/python",
        ".git/HEAD",
        "data/bronze/part-0.parquet",
        "app/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/cache",
        "build/lib/app/cli.py",
        "dist/energy_platform-0.1.0-py3-none-any.whl",
        "energy_platform.egg-info/PKG-INFO",
        "terraform/terraform.tfstate",
        "terraform/terraform.tfstate.backup",
        "terraform/.terraform/providers/x",
    ]
    kept = [p for p in must_ignore if not _ignored(p, ignore_rules)]
    assert not kept, f".dockerignore sends these into the build context: {kept}"


def test_dockerignore_keeps_what_the_build_copies(
    dockerfile: list[Stage], ignore_rules: list[tuple[bool, re.Pattern[str]]]
) -> None:
    sources = [
        src.strip("./") or "."
        for stage in dockerfile
        for instruction in stage.all("COPY") + stage.all("ADD")
        if "from" not in copy_sources(instruction)[0]
        for src in copy_sources(instruction)[1]
    ]
    files: list[str] = []
    for source in sources:
        path = ROOT / source
        if path.is_file():
            files.append(source)
            continue
        files += [
            p.relative_to(ROOT).as_posix()
            for p in path.rglob("*")
            if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc"
        ]
    assert any(f.endswith(".csv") for f in files), "the bundled sample is not among the copied files"
    dropped = [f for f in files if _ignored(f, ignore_rules)]
    assert not dropped, f".dockerignore leaves out files the build copies: {dropped[:10]}"


# --- docker-compose.yml ----------------------------------------------------------------------------

INTERPOLATION = re.compile(r"\$\{(?P<name>\w+)(?:(?P<op>:?[-?+])(?P<arg>[^}]*))?\}|\$(?P<bare>\w+)")


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose variable interpolation: ${X}, $X, ${X:-default}, ${X-default}, ${X:?error}, ${X:+alt}."""

    def replace(match: re.Match[str]) -> str:
        if match.group("bare"):
            return env.get(match.group("bare"), "")
        name, op, arg = match.group("name"), match.group("op"), match.group("arg") or ""
        present = name in env
        set_and_not_empty = bool(env.get(name))
        if op == ":-":
            return env[name] if set_and_not_empty else arg
        if op == "-":
            return env[name] if present else arg
        if op in (":?", "?"):
            if not (set_and_not_empty if op == ":?" else present):
                raise AssertionError(f"compose needs {name}: {arg}")
            return env[name]
        if op == ":+":
            return arg if set_and_not_empty else ""
        if op == "+":
            return arg if present else ""
        return env.get(name, "")

    return INTERPOLATION.sub(replace, value.replace("$$", "\0")).replace("\0", "$")


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("${SET:-d}/${EMPTY:-d}/${UNSET:-d}/${EMPTY-d}/${UNSET-d}", env) == "x/d/d//d"
    assert interpolate("$SET ${SET} $$SET ${SET:+alt}${EMPTY:+alt}", env) == "x x $SET alt"
    with pytest.raises(AssertionError, match="set it"):
        interpolate("${EMPTY:?set it}", env)


def _environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment, from the mapping or the `KEY=value` list form."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _named_volumes(service: dict[str, Any]) -> dict[str, str]:
    """Named volumes a service mounts: name -> container path (bind mounts and tmpfs left out)."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes") or []:
        if isinstance(volume, dict):
            if volume.get("type", "volume") == "volume" and volume.get("source"):
                mounts[volume["source"]] = volume["target"]
            continue
        source, _, rest = str(volume).partition(":")
        if rest and not source.startswith((".", "/", "~", "$")):
            mounts[source] = rest.split(":")[0]
    return mounts


def _command(service: dict[str, Any]) -> list[str]:
    command = service.get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(c) for c in command]


def _depends_on(service: dict[str, Any]) -> dict[str, dict[str, Any]]:
    depends = service.get("depends_on") or {}
    if isinstance(depends, list):  # the short form waits only for the start, never for health
        return {name: {"condition": "service_started"} for name in depends}
    return depends


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    assert COMPOSE_FILE.is_file(), f"no {COMPOSE_FILE}"
    parsed = yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))
    assert isinstance(parsed, dict), "docker-compose.yml is not a mapping"
    return parsed


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose.get("services") or {}


def test_compose_has_the_services(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    assert {"app", "db", "batch"} <= set(services), f"services: {sorted(services)}"
    assert "version" not in compose, "`version` is obsolete in the Compose specification"


def test_app_and_batch_run_the_image_app_builds(services: dict[str, dict[str, Any]]) -> None:
    app_service, batch = services["app"], services["batch"]
    assert app_service.get("build"), "app does not build the image"
    assert app_service.get("image"), "app's image has no name for batch to run"
    assert batch.get("image") == app_service["image"], f"{batch.get('image')!r} != {app_service['image']!r}"
    assert "build" not in batch, "batch would build a second copy of the image"


def test_named_volumes_are_declared(compose: dict[str, Any], services: dict[str, dict[str, Any]]) -> None:
    declared = set(compose.get("volumes") or {})
    used = {name for service in services.values() for name in _named_volumes(service)}
    assert used, "no service keeps its data in a named volume"
    assert used <= declared, f"volumes used but not declared at the top level: {sorted(used - declared)}"


def test_app_and_batch_share_settings_and_lake(services: dict[str, dict[str, Any]]) -> None:
    app_service, batch = services["app"], services["batch"]
    assert _environment(app_service) == _environment(batch), "app and batch would read different settings"
    lake = _named_volumes(app_service)
    assert lake == _named_volumes(batch), "app and batch would write different lakes"
    data_dir = _environment(app_service).get("DATA_DIR")
    assert data_dir in lake.values(), f"DATA_DIR={data_dir} is not on a named volume ({lake}); the lake would be lost"


def test_metadata_db_url_points_at_the_db_service(services: dict[str, dict[str, Any]]) -> None:
    raw = _environment(services["app"]).get("METADATA_DB_URL")
    assert raw, "app sets no METADATA_DB_URL: it would use SQLite in the container"
    db_env = {k: interpolate(v, {}) for k, v in _environment(services["db"]).items()}
    url = make_url(interpolate(raw, {}))
    assert url.get_backend_name() == "postgresql", url.drivername
    assert url.drivername == "postgresql+psycopg", f"{url.drivername}: the image installs psycopg 3"
    assert url.host == "db" and "db" in services, f"host {url.host!r} is not the db service"
    assert url.port in (None, 5432), url.port
    assert url.username == db_env.get("POSTGRES_USER"), (url.username, db_env)
    assert url.password == db_env.get("POSTGRES_PASSWORD"), "the URL's password is not the database's"
    assert url.database == db_env.get("POSTGRES_DB"), (url.database, db_env)
    # The same variable must feed both sides, or setting POSTGRES_PASSWORD breaks the login.
    changed = {"POSTGRES_PASSWORD": "s3cret"}
    assert make_url(interpolate(raw, changed)).password == interpolate(
        _environment(services["db"])["POSTGRES_PASSWORD"], changed
    )


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_environment_names_are_settings(services: dict[str, dict[str, Any]], name: str) -> None:
    known = environment_variable_names()
    unknown = set(_environment(services[name])) - known
    assert not unknown, f"{name}: Settings reads no {sorted(unknown)}; it reads {sorted(known)}"


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_environment_values_are_valid_settings(
    services: dict[str, dict[str, Any]], name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in environment_variable_names():
        monkeypatch.delenv(variable, raising=False)
    for variable, value in _environment(services[name]).items():
        monkeypatch.setenv(variable, interpolate(value, {}))
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    assert settings.execution_mode == "local"
    assert settings.metadata_url.startswith("postgresql")
    assert settings.data_dir == Path("/data")


def test_db_has_a_healthcheck_and_a_volume(services: dict[str, dict[str, Any]]) -> None:
    db = services["db"]
    assert str(db.get("image", "")).startswith("postgres:"), db.get("image")
    test = db.get("healthcheck", {}).get("test")
    assert test, "db has no healthcheck: `service_healthy` would never be reached"
    text = test if isinstance(test, str) else " ".join(test)
    env = _environment(db)
    assert "pg_isready" in text, text
    assert f"-U {env.get('POSTGRES_USER')}" in text, f"{text}: not the POSTGRES_USER"
    assert "/var/lib/postgresql/data" in _named_volumes(db).values(), "the database is lost with its container"


@pytest.mark.parametrize("name", PLATFORM_SERVICES)
def test_platform_waits_for_a_healthy_db(services: dict[str, dict[str, Any]], name: str) -> None:
    depends = _depends_on(services[name])
    assert "db" in depends, f"{name} does not depend on db"
    assert depends["db"].get("condition") == "service_healthy", f"{name}: {depends['db']}"


def test_app_publishes_the_exposed_port(services: dict[str, dict[str, Any]], runtime: Stage) -> None:
    ports = [str(p.get("target")) if isinstance(p, dict) else str(p) for p in services["app"].get("ports") or []]
    targets = {p.split(":")[-1].split("/")[0] for p in ports}
    exposed = {p.split("/")[0] for e in runtime.all("EXPOSE") for p in e.args.split()}
    assert str(API_PORT) in targets & exposed, f"published {ports}, exposed {sorted(exposed)}"
    assert services["app"].get("restart") == "unless-stopped"


def test_batch_runs_the_console_script_on_demand(services: dict[str, dict[str, Any]]) -> None:
    batch = services["batch"]
    command = _command(batch)
    assert command[:2] == ["energy-platform", "run-batch"], command
    scripts = _pyproject()["project"].get("scripts", {})
    assert command[0] in scripts, f"pyproject's [project.scripts] has no {command[0]!r}: {sorted(scripts)}"
    group: Any = typer.main.get_command(app.cli.app)
    assert command[1] in getattr(group, "commands", {}), f"the CLI has no {command[1]!r} command"
    assert batch.get("profiles"), "batch has no profile: `docker compose up` would run it every time"
    assert str(batch.get("restart", "no")) == "no", "a finished batch must not be restarted"


def _docker_compose_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return probe.returncode == 0


def test_docker_compose_config_is_valid() -> None:
    if not _docker_compose_available():
        pytest.skip("the `docker compose` client is not installed (`docker compose version` fails)")
    env = {**os.environ, "POSTGRES_PASSWORD": os.environ.get("POSTGRES_PASSWORD", "energy")}
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), "config", "-q"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# --- helpers -----------------------------------------------------------------------------------------


def _pyproject() -> dict[str, Any]:
    with (ROOT / "pyproject.toml").open("rb") as fh:
        return tomllib.load(fh)
