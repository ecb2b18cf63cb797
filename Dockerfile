# custos with SoftHSM2 (PKCS#11) and tpm2-tools, for people who run containers.
FROM node:20-bookworm-slim AS build
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm ci --no-audit --no-fund && npm prune --omit=dev

FROM node:20-bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends softhsm2 tpm2-tools opensc ca-certificates \
 && rm -rf /var/lib/apt/lists/* && useradd --system --home /var/lib/custos custos
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY hsm ./hsm
COPY attestation ./attestation
COPY policies ./policies
USER custos
ENV CUSTOS_STATE_DIR=/var/lib/custos CUSTOS_LISTEN=0.0.0.0:7800
EXPOSE 7800
ENTRYPOINT ["node", "/app/bin/custos.js"]
CMD ["serve"]
