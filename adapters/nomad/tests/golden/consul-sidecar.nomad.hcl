# Rendered by `vitals render nomad` from health.toml; run with: nomad job run agent.nomad.hcl
# NOTE: the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin
# NOTE: the vitals task reads OPENAI_API_KEY from Nomad Variables; store them before running the job: nomad var put nomad/jobs/agent OPENAI_API_KEY=...
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
      mode = "bridge"

      port "http" {
        to = 8000
      }

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
      }

      service {
        name = "agent"
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
          failures_before_critical = 3
        }
      }
    }

    task "vitals" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "45s"
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
        data = "\n[startup]\ntimeout = \"4m\"\n[drain]\ndelay = \"5s\"\ngrace = \"40s\"\n[readiness]\ndegraded_status = 429\n[probes]\nreadiness = { period = \"5s\", timeout = \"2s\", failure_threshold = 3 }\n"
      }

      template {
        destination = "secrets/vitals.env"
        change_mode = "restart"
        env = true
        data = "{{ with nomadVar \"nomad/jobs/agent\" }}\nOPENAI_API_KEY={{ .OPENAI_API_KEY | toJSON }}\n{{ end }}\n"
      }

      service {
        name = "agent-vitals"
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
            grace = "4m"
            ignore_warnings = true
          }
        }
      }
    }
  }
}
