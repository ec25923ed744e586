# Cadres Backup control plane on the official Deno image (docs/deploy.md).
#   docker build -t cadres-backup .
#   docker run -p 8000:8000 -v cadres-data:/data -e CADRES_BASE_URL=https://backup.example.com cadres-backup
FROM denoland/deno:2.9.6

WORKDIR /app
# Dependencies first (cached while only the source changes).
COPY deno.json deno.lock ./
COPY . .
# Fetch every npm dependency and bundle the islands at build time: the container needs no network at start.
RUN deno install --frozen --entrypoint main.ts cli.ts \
  && deno task build \
  && mkdir -p /data && chown deno:deno /data

USER deno
ENV PORT=8000 \
    CADRES_DATA_DIR=/data \
    DENO_NO_UPDATE_CHECK=1
VOLUME ["/data"]
EXPOSE 8000
# SIGTERM (docker stop) shuts down gracefully within CADRES_SHUTDOWN_SECONDS (25 s): give `docker stop -t 30`.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s \
  CMD deno eval --no-lock "const r = await fetch('http://127.0.0.1:' + (Deno.env.get('PORT') ?? '8000') + '/readyz'); Deno.exit(r.ok ? 0 : 1)"
CMD ["run", "--allow-net", "--allow-env", "--allow-read", "--allow-write", "--allow-sys", "main.ts"]
