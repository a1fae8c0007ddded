# The granary image: the `granary` command (cache worker, CSI node plugin, FUSE mount, CLI).
# Build: docker build -t <registry>/granary:<version> .   (deploy/kubernetes/kustomization.yaml names the image)

FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
# Scripts off: `prepare` would build before the sources are here; the build runs below.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build \
 && cd src && find . -name '*.proto' -exec cp --parents {} ../dist/ \;

FROM node:20-slim
# fuse3: fusermount3 and the FUSE tools the mount falls back on; mount, umount and nsenter come with the base image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends fuse3 \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
RUN chmod +x dist/cli/main.js && ln -s /app/dist/cli/main.js /usr/local/bin/granary
# Workers run as `node` (uid 1000, set in the manifests); the CSI plugin runs as root, privileged.
USER node
ENTRYPOINT ["granary"]
CMD ["--help"]
