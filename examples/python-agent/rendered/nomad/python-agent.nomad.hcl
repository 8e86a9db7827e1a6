# Rendered by `vitals render nomad` from health.toml; run with: nomad job run python-agent.nomad.hcl
# NOTE: with agent.heartbeat = "required", a hung agent fails vitals' liveness check, and check_restart restarts the task that check belongs to, the vitals task, not the agent's; give the agent's task a check of its own on /healthz/agent with check_restart

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
        image = "registry.example.com/vitals:0.1.0"
        args = [
          "serve",
          "--config",
          "/etc/vitals/health.toml"
        ]
        ports = [
          "vitals"
        ]
      }

      service {
        name = "python-agent"
        provider = "consul"
        port = "vitals"

        check {
          name = "healthz"
          type = "http"
          path = "/healthz"
          interval = "10s"
          timeout = "2s"

          check_restart {
            limit = 3
            grace = "1m"
            ignore_warnings = true
          }
        }

        check {
          name = "readyz"
          type = "http"
          path = "/readyz?degraded_status=429"
          interval = "5s"
          timeout = "2s"
          on_update = "ignore_warnings"
          failures_before_critical = 2
        }
      }
    }
  }
}
