#!/usr/bin/env bash
# Best-effort install of what tests/test_server_browser.py needs:
#   - Debian's `chromium` (apt-get, only when running as root with apt available)
#   - the `playwright` Python package, into the project's venv (its browser download is never used:
#     the test drives /usr/bin/chromium through executable_path)
# Prints what it could not do and always exits 0: the browser test skips with a reason when either is absent.
set -u
VENV="${VENV:-.venv}"
PLAYWRIGHT_VERSION="1.65.2"

if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    echo "install-browser: chromium present"
elif [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q chromium >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1 \
            || echo "install-browser: apt-get could not install chromium; the browser test will skip"
    fi
    command -v chromium >/dev/null 2>&1 && echo "install-browser: chromium installed"
else
    echo "install-browser: chromium is missing and this is not root with apt-get; install it yourself" \
         "(e.g. sudo apt-get install chromium) or the browser test will skip"
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "install-browser: no venv at $VENV; skipping playwright"
elif "$VENV/bin/python" -c "import playwright" >/dev/null 2>&1; then
    echo "install-browser: playwright present"
elif "$VENV/bin/python" -m pip install -q "playwright==$PLAYWRIGHT_VERSION"; then
    echo "install-browser: playwright $PLAYWRIGHT_VERSION installed"
else
    echo "install-browser: pip could not install playwright; the browser test will skip"
fi
exit 0
