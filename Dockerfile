# The Marina worker image (used by docker-compose.yml).
# The image helper the worker copies to Mac hosts: static Go binaries, one per host platform.
FROM golang:1.26-bookworm AS helper
WORKDIR /src
COPY helper ./
RUN for p in darwin-arm64 darwin-amd64 linux-amd64 linux-arm64; do \
      CGO_ENABLED=0 GOOS=${p%-*} GOARCH=${p#*-} go build -trimpath -ldflags='-s -w' -o /out/marina-image-helper-$p . || exit 1; \
    done

FROM node:20-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm install --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY workflows ./workflows
COPY activities ./activities
COPY --from=helper /out ./.marina/helper
USER node
ENTRYPOINT ["./bin/marina"]
CMD ["worker"]
