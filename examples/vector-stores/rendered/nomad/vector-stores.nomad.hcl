# Rendered by `vitals render nomad` from health.toml; run with: nomad job run vector-stores.nomad.hcl

job "vector-stores" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "vector-stores" {
    count = 2

    network {
      port "vitals" {
        to = 8080
      }
    }

    task "vector-stores" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "10s"
      shutdown_delay = "3s"

      config {
        image = "registry.example.com/vector-stores:1.0.0"
      }
    }

    task "vitals" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "10s"
      shutdown_delay = "3s"

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
        name = "vector-stores"
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
