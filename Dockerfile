# dqserve on the CPU: the server and the bundled models in models/.
#   docker build -t dqserve .
#   docker run --rm -p 8080:8080 dqserve            # DQSERVE_* variables configure it (README)
# Node 20 on Debian bookworm: sharp and onnxruntime-node ship prebuilt linux-x64/arm64 glibc binaries.
FROM node:20-bookworm-slim AS build
WORKDIR /app
# onnxruntime-node's install would download CUDA binaries; its CPU build ships in the package.
ENV ONNXRUNTIME_NODE_INSTALL=skip
COPY package.json package-lock.json .npmrc tsconfig.json ./
COPY src ./src
# npm ci runs `prepare` (tsc -> dist/), then the dev tools are dropped.
RUN npm ci --no-audit --no-fund && npm prune --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production DQSERVE_HOST=0.0.0.0 DQSERVE_PORT=8080
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY models ./models
COPY ui ./ui
USER node
EXPOSE 8080
# Ready only after every bit-width path is warmed up (GET /v2/health/ready).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8080/v2/health/ready').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# SIGTERM drains: new requests get 503, accepted ones finish, then exit, within DQSERVE_DRAIN_TIMEOUT_MS (10 s).
STOPSIGNAL SIGTERM
CMD ["node", "dist/cli.js", "serve"]
