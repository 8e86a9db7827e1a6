# Rendered by `vitals render nomad` from health.toml; run with: nomad job run hosted-llm.nomad.hcl
# NOTE: the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin
# NOTE: the vitals task reads OPENAI_API_KEY from Nomad Variables; store them before running the job: nomad var put nomad/jobs/hosted-llm OPENAI_API_KEY=...

job "hosted-llm" {
  type = "service"

  update {
    max_parallel = 1
    health_check = "checks"
    min_healthy_time = "10s"
    healthy_deadline = "5m"
    progress_deadline = "10m"
    auto_revert = true
  }

  group "hosted-llm" {
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

    task "hosted-llm" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "30s"
      shutdown_delay = "5s"

      config {
        image = "registry.example.com/hosted-llm:1.0.0"
      }

      service {
        name = "hosted-llm"
        provider = "consul"
        port = "http"

        check {
          name = "readyz"
          type = "http"
          path = "/readyz?degraded_status=429"
          port = "vitals"
          interval = "10s"
          timeout = "3s"
          on_update = "ignore_warnings"
          failures_before_critical = 2
        }
      }
    }

    task "vitals" {
      driver = "docker"
      kill_signal = "SIGTERM"
      kill_timeout = "30s"
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
        data = "# An agent on a hosted LLM, with a vector store and two tools.\n# The LLM gets a one-token completion every minute at most (a budget of 60 probes an hour,\n# about 90 tokens an hour); the vector store a known-point lookup that exercises its index.\n\n[server]\nlisten = \"0.0.0.0:8080\"\n\n[startup]\ntimeout = \"60s\"            # the agent warms its caches; nothing slow to load\nrequire = [\"llm\", \"vectors\"]\n\n[readiness]\ndegraded_status = 429      # a tool down: still serving (Consul \"warning\"; ALB matcher accepts 429)\n\n[drain]\ndelay = \"5s\"\ngrace = \"25s\"\n\n[probes]\nliveness  = { period = \"10s\", timeout = \"2s\", failure_threshold = 3 }\nreadiness = { period = \"10s\", timeout = \"3s\", failure_threshold = 2 }\nstartup   = { period = \"5s\",  timeout = \"2s\" }\n\n[[dependencies]]\nname = \"llm\"\nkind = \"openai\"\nbase_url = \"https://api.openai.com/v1\"\nmodel = \"gpt-4o-mini\"\napi_key_env = \"OPENAI_API_KEY\"   # the key comes from the environment, never from this file\ncheck = \"completion\"             # one token; \"models\" is free, \"semantic\" validates an answer\ninterval = \"30s\"\ntimeout = \"10s\"\nmax_probes_per_hour = 60         # stretches the interval to 1m: never more than 60 calls an hour\n\n[[dependencies]]\nname = \"vectors\"\nkind = \"http\"                    # Qdrant: fetch a known point, so the index is exercised\nurl = \"http://qdrant.internal:6333/collections/docs/points/42\"\nexpect_json = { pointer = \"/result/id\", equals = 42 }\ninterval = \"15s\"\ntimeout = \"2s\"\n\n[[dependencies]]\nname = \"web-search\"\nkind = \"http\"\nurl = \"http://search-tool.internal:9000/health\"\ncritical = false\n\n[[dependencies]]\nname = \"crm\"\nkind = \"http\"\nurl = \"http://crm-tool.internal:9100/healthz\"\nmethod = \"HEAD\"\ncritical = false\n"
      }

      template {
        destination = "secrets/vitals.env"
        change_mode = "restart"
        env = true
        data = "{{ with nomadVar \"nomad/jobs/hosted-llm\" }}\nOPENAI_API_KEY={{ .OPENAI_API_KEY | toJSON }}\n{{ end }}\n"
      }

      service {
        name = "hosted-llm-vitals"
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
      }
    }
  }
}
