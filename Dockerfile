# The Marina worker image (used by docker-compose.yml). Base tags are Docker Official Images, checked against
# docker-library/official-images (library/golang, library/node); see README "Running on Docker".
# The image helper the worker copies to Mac hosts: static Go binaries, one per host platform.
FROM golang:1.26-bookworm AS helper
WORKDIR /src
COPY helper ./
RUN for p in darwin-arm64 darwin-amd64 linux-amd64 linux-arm64; do \
      CGO_ENABLED=0 GOOS=${p%-*} GOARCH=${p#*-} go build -trimpath -ldflags='-s -w' -o /out/marina-image-helper-$p . || exit 1; \
    done

# Node 22 (LTS): Node 20 is past its end of life.
FROM node:22-bookworm-slim
WORKDIR /app
COPY package.json package-lock.json ./
# Exactly the locked versions; the bundler (webpack, swc) comes with @temporalio/worker, tsx is a runtime dependency.
RUN npm ci --omit=dev --no-audit --no-fund
COPY tsconfig.json ./
COPY bin ./bin
COPY src ./src
COPY workflows ./workflows
COPY activities ./activities
COPY scripts/bundle-workflows.ts scripts/ensure-bucket.ts scripts/check-s3.ts ./scripts/
# The workflow bundle, built once here rather than by webpack at every worker start: a worker starts in seconds,
# and every container of this image runs byte-identical workflow code. A failed bundle fails the build.
RUN node --import tsx scripts/bundle-workflows.ts /app/dist/workflow-bundle.js
ENV MARINA_WORKFLOW_BUNDLE=/app/dist/workflow-bundle.js
COPY --from=helper /out ./.marina/helper
USER node
ENTRYPOINT ["./bin/marina"]
CMD ["worker"]
