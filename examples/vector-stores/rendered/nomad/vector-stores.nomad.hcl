# Rendered by `vitals render nomad` from health.toml; run with: nomad job run vector-stores.nomad.hcl
# NOTE: the group uses bridge networking (the agent and vitals share 127.0.0.1): each client needs the CNI reference plugins in /opt/cni/bin
# NOTE: the vitals task reads REDIS_PASSWORD, PGPASSWORD from Nomad Variables; store them before running the job: nomad var put nomad/jobs/vector-stores REDIS_PASSWORD=... PGPASSWORD=...

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
      mode = "bridge"

      port "http" {
        to = 8000
      }

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

      service {
        name = "vector-stores"
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
        data = "# Vector stores checked with a known-key lookup that exercises the index, not just the port.\n# Passwords come from the environment (password_env), never from a URL in this file.\n\n[server]\nlisten = \"0.0.0.0:8080\"\n\n[startup]\ntimeout = \"60s\"\n\n[drain]\ndelay = \"3s\"\ngrace = \"7s\"\n\n[[dependencies]]\nname = \"redis-vectors\"\nkind = \"redis\"\nurl = \"redis://redis.internal:6379/0\"\npassword_env = \"REDIS_PASSWORD\"\ncommand = \"EXISTS doc:42\"        # or [\"JSON.GET\", \"doc:42\", \"$.id\"], [\"FT.INFO\", \"idx:docs\"]\nexpect = \"1\"                     # the reply exactly, or a /regex/\ninterval = \"15s\"\ntimeout = \"2s\"\n\n[[dependencies]]\nname = \"pgvector\"\nkind = \"postgres\"\nurl = \"postgres://agent@pg.internal:5432/rag\"\npassword_env = \"PGPASSWORD\"\nquery = \"SELECT 1 FROM chunks WHERE id = 42 AND embedding IS NOT NULL\"\nexpect_rows = 1\ninterval = \"15s\"\ntimeout = \"3s\"\n\n[[dependencies]]\nname = \"qdrant\"\nkind = \"http\"\nurl = \"http://qdrant.internal:6333/collections/docs/points/42\"\nexpect_json = { pointer = \"/result/id\", equals = 42 }\ncritical = false\n\n[[dependencies]]\nname = \"weaviate\"\nkind = \"http\"\nurl = \"http://weaviate.internal:8080/v1/objects/Doc/5b9c0a52-6a5b-4a5e-9a57-1c2d3e4f5a6b\"\nexpect_json = { pointer = \"/id\", equals = \"5b9c0a52-6a5b-4a5e-9a57-1c2d3e4f5a6b\" }\ncritical = false\n\n[[dependencies]]\nname = \"chroma\"\nkind = \"http\"\nurl = \"http://chroma.internal:8000/api/v2/heartbeat\"\nexpect_json = { pointer = \"/nanosecond heartbeat\" }   # present means up\ncritical = false\n\n[[dependencies]]\nname = \"index-freshness\"\nkind = \"exec\"\ncommand = [\"/usr/local/bin/check-index-age\", \"--max-age\", \"24h\"]   # exit 0 = healthy; no shell\ncritical = false\ninterval = \"5m\"\ntimeout = \"20s\"\n"
      }

      template {
        destination = "secrets/vitals.env"
        change_mode = "restart"
        env = true
        data = "{{ with nomadVar \"nomad/jobs/vector-stores\" }}\nREDIS_PASSWORD={{ .REDIS_PASSWORD | toJSON }}\nPGPASSWORD={{ .PGPASSWORD | toJSON }}\n{{ end }}\n"
      }

      service {
        name = "vector-stores-vitals"
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
