# The go subject of scripts/bench: the Go job of bench/go, built static
# (CGO_ENABLED=0 go build -trimpath -ldflags "-s -w", Debian's golang-go) and
# packaged the same way as the job image (Dockerfile.scratch): FROM scratch,
# one COPY, so one layer holding one file, run as a numeric non-root user.
#
# scripts/bench builds it from a context holding only the binary, named job:
#   docker build -f bench/Dockerfile.go -t s2s-bench/go:latest CONTEXT
# and runs it like the job image:
#   docker run --rm --network host -e SERVICE_URL=http://127.0.0.1:PORT/echo s2s-bench/go:latest
FROM scratch
COPY job /job
USER 65532:65532
ENTRYPOINT ["/job"]
