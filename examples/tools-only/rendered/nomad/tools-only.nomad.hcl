# Rendered by `vitals render nomad` from health.toml; run with: nomad job run tools-only.nomad.hcl
# NOTE: the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin

job "tools-only" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "tools-only" {
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

    task "tools-only" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "20s"
      shutdown_delay = "5s"

      config {
        image = "registry.example.com/tools-only:1.0.0"
      }

      service {
        name = "tools-only"
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
      }
    }

    task "vitals" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "20s"
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
        data = "# A tools-only agent: no model of its own, three tool APIs, one of which it cannot work without.\n\n[server]\nlisten = \"0.0.0.0:8080\"\n\n[startup]\ntimeout = \"30s\"\n\n[drain]\ndelay = \"5s\"\ngrace = \"15s\"\n\n[[dependencies]]\nname = \"tickets\"\nkind = \"http\"\nurl = \"http://tickets.internal:8080/health\"\nexpect_body = \"ok\"\n\n[[dependencies]]\nname = \"calendar\"\nkind = \"http\"\nurl = \"http://calendar.internal:8080/status\"\ncritical = false\n\n[[dependencies]]\nname = \"files\"\nkind = \"tcp\"\naddress = \"files.internal:445\"\ncritical = false\n"
      }

      service {
        name = "tools-only-vitals"
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
            grace = "30s"
            ignore_warnings = true
          }
        }
      }
    }
  }
}
