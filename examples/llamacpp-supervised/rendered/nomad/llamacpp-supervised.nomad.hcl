# Rendered by `vitals render nomad` from health.toml; run with: nomad job run llamacpp-supervised.nomad.hcl

job "llamacpp-supervised" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "llamacpp-supervised" {
    count = 2

    network {
      port "http" {
        to = 8000
      }

      port "vitals" {
        to = 8080
      }
    }

    task "llamacpp-supervised" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "23s"
      shutdown_delay = "3s"

      config {
        image = "registry.example.com/llamacpp-supervised:1.0.0"
        entrypoint = [
          "/usr/local/bin/vitals"
        ]
        args = [
          "serve",
          "--config",
          "$${NOMAD_TASK_DIR}/health.toml",
          "--",
          "python",
          "-m",
          "agent"
        ]
        ports = [
          "http",
          "vitals"
        ]
      }

      template {
        destination = "local/health.toml"
        change_mode = "restart"
        data = "# vitals starts llama.cpp's server itself, keeps it healthy and puts the gate in front of it.\n# The agent sends its completions to the gate (port 8081), which follows the server to whatever\n# port of 5800-5899 it runs on; a crash, a hang or a failed health check restarts the server\n# with backoff, and the instance is not ready (but stays alive) until it has loaded again.\n# The container that runs vitals must hold llama-server and the model: render with\n# --layout entrypoint for an agent image that has them, or build such a vitals image.\n\n[server]\nlisten = \"0.0.0.0:8080\"\n\n[startup]\ntimeout = \"240s\"           # the first model load\n\n[drain]\ndelay = \"3s\"\ngrace = \"20s\"              # in-flight generations finish before llama-server gets SIGTERM\n\n[gate]\nlisten = \"127.0.0.1:8081\"  # the agent shares the pod's network; no other pod reaches the gate\nprocess = \"llama\"\nmax_concurrent = 4         # llama-server --parallel 4\nqueue_depth = 16\nqueue_timeout = \"10s\"\nrequest_timeout = \"120s\"   # the longest non-streamed answer; none begun by then: hung\n\n[[processes]]\nname = \"llama\"\ncommand = [\"/usr/local/bin/llama-server\", \"--host\", \"127.0.0.1\", \"--port\", \"{port}\",\n           \"--parallel\", \"4\", \"-m\", \"/models/model.gguf\"]\nport = \"5800-5899\"\nhealth = \"/health\"         # 503 while the model loads\nstart_timeout = \"240s\"\nstall_after = \"60s\"        # a stream in flight and no token for a minute: hung\ngive_up_after = 6          # then it stays down: not ready, with why, and AgentRestartLoop has paged\n[processes.backoff]\ninitial = \"2s\"\nmax = \"5m\"\nreset_after = \"10m\"\n"
      }

      service {
        name = "llamacpp-supervised"
        provider = "consul"
        port = "http"

        check {
          name = "healthz"
          type = "http"
          path = "/healthz"
          port = "vitals"
          interval = "10s"
          timeout = "2s"

          check_restart {
            limit = 3
            grace = "4m"
            ignore_warnings = true
          }
        }

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
  }
}
