"""The pinned versions and image names of everything claude-bottle runs.

One place, so that the product, scripts/offline-images.sh and the tests never
disagree. Run as a module to print them for shell scripts.
"""

# The bottle image starts from this unless the manifest or CLAUDE_BOTTLE_BASE_IMAGE says otherwise.
BASE_IMAGE = "debian:bookworm-slim"

# Claude Code inside the bottle never updates itself; change the version here.
CLAUDE_CODE_VERSION = "2.1.332"

# The egress sidecar. Official tags carry no leading "v".
PIPELOCK_VERSION = "2.3.0"
PIPELOCK_IMAGE = f"ghcr.io/luckypipewrench/pipelock:{PIPELOCK_VERSION}"

if __name__ == "__main__":
    print(BASE_IMAGE, CLAUDE_CODE_VERSION, PIPELOCK_IMAGE, PIPELOCK_VERSION)
