# The granary image: the `granary` command (cache worker, CSI node plugin, FUSE mount, CLI).
# Build: docker build -t <registry>/granary:<version> .   (deploy/kubernetes/kustomization.yaml names the image)

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts off: `prepare` would build before the sources are here; the build runs below.
RUN npm ci --ignore-scripts
# Only what .dockerignore lets through: the tsconfig files, src/ and proto/ (the CSI plugin's .proto).
COPY . .
RUN mkdir -p proto && npm run build

FROM node:20-slim
# fuse3: fusermount3 and the FUSE tools; mount, umount and nsenter come with the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
# Loaded at run time relative to dist/ (../../proto).
COPY --from=build /app/proto ./proto
RUN chmod +x dist/cli/main.js && ln -s /app/dist/cli/main.js /usr/local/bin/granary
# Workers run as `node` (uid 1000, set in the manifests too); the CSI plugin runs as root, privileged.
USER node
ENTRYPOINT ["granary"]
CMD ["--help"]
