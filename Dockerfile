# One image for every app service (collector, speed layer, lake writer, Temporal
# worker, serving layer, simulator); docker-compose.yml picks the command.
FROM node:22-bookworm-slim
WORKDIR /app
ENV NODE_ENV=production
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# Anything below runs as the unprivileged node user.
RUN mkdir -p /app/.scratch && chown -R node:node /app/.scratch
USER node
CMD ["npx", "tsx", "--help"]
