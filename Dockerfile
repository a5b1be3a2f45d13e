# rmas on the CPU: `rmas serve` (OpenAI-compatible API) by default; see docs/serve.md.
#   docker build -t rmas .
#   docker run --rm -p 8080:8080 rmas                                   # the built-in demo system
#   docker run --rm -p 8080:8080 -v ~/.cache/huggingface:/data/hf rmas \
#     serve --style mixture --host 0.0.0.0 --port 8080                   # a released system from the cache
# The CUDA image is Dockerfile.cuda.

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The CPU backend only (no wgpu/Vulkan in the image).
RUN cargo build --release --locked -p rmas-cli --no-default-features

FROM debian:bookworm-slim
# python3 and bubblewrap: the sandbox of model-written code (deliberation tools, code scoring);
# inside a container it needs user namespaces (see SECURITY.md and `rmas doctor`).
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates python3 bubblewrap \
    && rm -rf /var/lib/apt/lists/* && useradd --create-home rmas
COPY --from=build /src/target/release/rmas /usr/local/bin/rmas
USER rmas
ENV HF_HOME=/data/hf
EXPOSE 8080
ENTRYPOINT ["rmas"]
CMD ["serve", "--demo", "--host", "0.0.0.0", "--port", "8080"]
