# Rendered by `vitals render nomad` from health.toml; run with: nomad job run llamacpp-slow-load.nomad.hcl
# NOTE: the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin

job "llamacpp-slow-load" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "llamacpp-slow-load" {
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

    task "llamacpp-slow-load" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "10s"
      shutdown_delay = "3s"

      config {
        image = "registry.example.com/llamacpp-slow-load:1.0.0"
      }

      service {
        name = "llamacpp-slow-load"
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
      kill_timeout = "10s"
      shutdown_delay = "3s"

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
        data = "# A self-hosted model behind llama.cpp's server, which takes about 4 minutes to load.\n# /startupz stays 503 until the model answers, so every platform waits out the load instead of\n# restarting the instance; /healthz answers from the start, so liveness never kills a slow boot.\n\n[server]\nlisten = \"0.0.0.0:8080\"\n\n[startup]\ntimeout = \"240s\"           # the whole load; Cloud Run's startup window is at most 240s\n\n[drain]\ndelay = \"3s\"\ngrace = \"7s\"               # within Cloud Run's 10s from SIGTERM to SIGKILL\n\n[probes]\nliveness  = { period = \"10s\", timeout = \"2s\", failure_threshold = 3 }\nreadiness = { period = \"5s\",  timeout = \"2s\", failure_threshold = 2 }\nstartup   = { period = \"10s\", timeout = \"2s\" }   # 24 tries x 10s = 240s\n\n[[dependencies]]\nname = \"llama\"\nkind = \"openai\"                        # llama.cpp's server speaks the OpenAI API\nbase_url = \"http://127.0.0.1:8081/v1\"\nmodel = \"local\"\nhealth_path = \"/health\"                # 503 while loading: reported as \"model still loading\"\ncheck = \"semantic\"                     # a real answer, checked: a broken model fails here\nexpect = \"/(?i)ready/\"\ninterval = \"30s\"\ntimeout = \"10s\"\n"
      }

      service {
        name = "llamacpp-slow-load-vitals"
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
