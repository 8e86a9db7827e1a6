# Rendered by `vitals render nomad` from health.toml; run with: nomad job run python-agent.nomad.hcl
# NOTE: the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin

job "python-agent" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "python-agent" {
    count = 2

    network {
      mode = "bridge"

      port "http" {
        to = 8000
      }

      port "vitals" {
        to = 8080
      }
    }

    task "python-agent" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "25s"
      shutdown_delay = "5s"

      config {
        image = "registry.example.com/python-agent:1.0.0"
      }

      service {
        name = "python-agent"
        provider = "consul"
        port = "http"

        check {
          name = "readyz"
          type = "http"
          path = "/readyz?degraded_status=429"
          port = "vitals"
          interval = "5s"
          timeout = "2s"
          on_update = "ignore_warnings"
          failures_before_critical = 2
        }

        check {
          name = "healthz-agent"
          type = "http"
          path = "/healthz/agent"
          port = "vitals"
          interval = "10s"
          timeout = "2s"

          check_restart {
            limit = 3
            grace = "1m"
            ignore_warnings = true
          }
        }
      }
    }

    task "vitals" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "25s"
      shutdown_delay = "5s"

      lifecycle {
        hook = "prestart"
        sidecar = true
      }

      config {
        image = "vitals:0.1.0"
        args = [
          "serve",
          "--config",
          "$${NOMAD_TASK_DIR}/health.toml"
        ]
      }

      template {
        destination = "local/health.toml"
        change_mode = "restart"
        data = "# vitals beside a Python agent (agent.py): the agent beats, says when it has started, and\n# reports whether its web-search tool works. Run both:\n#   vitals serve --config examples/python-agent/health.toml\n#   TOOL_URL=http://127.0.0.1:9000/search python3 examples/python-agent/agent.py\n\n[server]\nlisten = \"0.0.0.0:8080\"\n\n[startup]\ntimeout = \"60s\"        # the agent's warm-up must finish (POST /started) within this\n\n[agent]\nheartbeat = \"required\" # /healthz (and /healthz/agent) fail when the agent's loop stops\nstall_after = \"5s\"     # the agent beats every second: five missed beats is a hung loop\nstartup = \"signal\"     # /startupz waits for the agent's POST /started\n\n[[signals]]\nname = \"web-search\"    # non-critical: down means degraded, still in traffic\nttl = \"15s\"            # a report older than this counts as down (the agent went quiet)\n\n[drain]\ndelay = \"5s\"\ngrace = \"20s\"\n"
      }

      service {
        name = "python-agent-vitals"
        provider = "consul"
        port = "vitals"

        check {
          name = "healthz"
          type = "http"
          path = "/healthz/vitals"
          interval = "10s"
          timeout = "2s"

          check_restart {
            limit = 3
            grace = "1m"
            ignore_warnings = true
          }
        }
      }
    }
  }
}
