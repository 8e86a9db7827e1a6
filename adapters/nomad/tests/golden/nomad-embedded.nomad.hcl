# Rendered by `vitals render nomad` from health.toml; run with: nomad job run agent.nomad.hcl
# NOTE: provider = "nomad" has no traffic gating: its service discovery returns every instance, ready or not, so the readiness check gates deployments and nothing else; use provider = "consul" (or a router that reads /readyz) to keep traffic off an instance that is not ready
# NOTE: provider = "nomad" has no warning state: a degraded agent answers readiness.degraded_status (429) on /readyz, and any status of 400 or more fails the check
# NOTE: kill_timeout = 45s (drain.delay + drain.grace) exceeds the clients' default max_kill_timeout (30s), which caps it silently; raise max_kill_timeout on the clients or lower drain.grace

job "agent" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "agent" {
    count = 2

    network {
      port "vitals" {
        to = 8080
      }
    }

    task "agent" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "45s"
      shutdown_delay = "5s"

      config {
        image = "registry.example.com/agent:1.0.0"
        ports = [
          "vitals"
        ]
      }

      service {
        name = "agent"
        provider = "nomad"
        port = "vitals"

        check {
          name = "healthz"
          type = "http"
          path = "/healthz"
          interval = "10s"
          timeout = "2s"

          check_restart {
            limit = 3
            grace = "4m"
          }
        }

        check {
          name = "readyz"
          type = "http"
          path = "/readyz"
          interval = "5s"
          timeout = "2s"
        }
      }
    }
  }
}
