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
# The source of that release, for machines without a registry (scripts/offline-images.sh builds the
# image from it): the tag's commit, and the sha256 of `git archive --prefix=pipelock-<version>/ v<version>`
# gzipped, which is checked before anything is built from an archive.
PIPELOCK_COMMIT = "7a3b7de4a5552b4e756eb930256468b7cbd616b1"
PIPELOCK_SOURCE_SHA256 = "8ac6694c56c3d1c5a134c0dac3a59b258ba8ea2e6d82bd177016bfbefed433a3"

if __name__ == "__main__":
    print(BASE_IMAGE, CLAUDE_CODE_VERSION, PIPELOCK_IMAGE, PIPELOCK_VERSION, PIPELOCK_COMMIT, PIPELOCK_SOURCE_SHA256)
