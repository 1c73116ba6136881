#!/usr/bin/env bash
# `buf breaking` for `make lint`: the contract (protos/, buf.yaml's FILE rules) must not break
# against the previous commit.
#
# "Previous" means the commit before the one change under review, so that the same change is
# checked before it is committed and after:
#   - protos/ or buf.yaml has uncommitted changes (someone editing a contract): the change is the
#     working tree, compared with HEAD;
#   - otherwise (a fresh clone in CI, or nothing pending): the change is the last commit,
#     compared with HEAD~1.
# Always comparing with HEAD~1 would blame an uncommitted edit on the last commit's contract and
# re-check an old change; always comparing with HEAD would check nothing in CI.
#
#     tools/buf_breaking.sh                    as above
#     BUF_AGAINST=<rev> tools/buf_breaking.sh  against a given revision (e.g. origin/main on a branch)
#
# A repository whose HEAD has no parent has nothing to break. A shallow clone without the parent
# fails with what to fetch; it never passes unchecked.
set -euo pipefail
cd "$(dirname "$0")/.."

BUF=${BUF:-node_modules/.bin/buf}
[[ -x "$BUF" ]] || { echo "$0: $BUF missing: run \`npm ci\`" >&2; exit 1; }

if [[ -n "${BUF_AGAINST:-}" ]]; then
  against=$BUF_AGAINST
elif [[ -n "$(git status --porcelain --untracked-files=all -- protos buf.yaml)" ]]; then
  against=HEAD
else
  parents=$(git rev-list --parents -n 1 HEAD | wc -w)
  if [[ $parents -lt 2 ]]; then
    if [[ $(git rev-parse --is-shallow-repository) == true ]]; then
      echo "$0: shallow clone without HEAD's parent; run \`git fetch --deepen=1\` (or set BUF_AGAINST)" >&2
      exit 1
    fi
    echo "buf breaking: HEAD is the first commit; nothing to compare with"
    exit 0
  fi
  against=HEAD~1
fi

commit=$(git rev-parse --verify --quiet "$against^{commit}") || {
  echo "$0: no commit $against to compare with" >&2
  exit 1
}
echo "buf breaking against $against ($(git log -1 --format='%h %s' "$commit"))"
"$BUF" breaking --against ".git#ref=$commit"
