#!/bin/sh
# Install the fgdesk bundle for the current user (no root needed).
#
#   packaging/install-linux.sh [BUNDLE_DIR]    from a source checkout (default: dist/fgdesk)
#   dist/fgdesk/install.sh                     from a built bundle (build.py puts it there)
#   packaging/install-linux.sh --desktop-only  menu entry and icons for a pip install
#   ... --uninstall                            remove what an earlier run installed
#
# Copies the bundle to ~/.local/opt/fgdesk, links ~/.local/bin/fgdesk and
# ~/.local/bin/fgdesk-app to it, and installs the desktop entry, AppStream metainfo and
# icons under ~/.local/share. XDG_DATA_HOME is honoured; PREFIX (default ~/.local)
# moves everything.
set -eu

APP_ID="io.github.fgdesk.fgdesk"
SIZES="16 32 48 64 128 256 512"
PREFIX="${PREFIX:-$HOME/.local}"
DATA_HOME="${XDG_DATA_HOME:-$PREFIX/share}"
DEST="$PREFIX/opt/fgdesk"
BIN="$PREFIX/bin"

HERE="$(cd "$(dirname "$0")" && pwd)"

say() { printf '%s\n' "$*"; }
die() { printf 'install-linux.sh: error: %s\n' "$*" >&2; exit 1; }

uninstall() {
    for name in fgdesk fgdesk-app; do
        link="$BIN/$name"
        # Only remove links that point into our folder, never someone else's fgdesk.
        if [ -L "$link" ]; then
            case "$(readlink "$link")" in "$DEST"/*) rm -f "$link" ;; esac
        fi
    done
    rm -f "$DATA_HOME/applications/fgdesk.desktop" "$DATA_HOME/metainfo/$APP_ID.metainfo.xml"
    for size in $SIZES; do
        rm -f "$DATA_HOME/icons/hicolor/${size}x${size}/apps/fgdesk.png"
    done
    rm -f "$DATA_HOME/icons/hicolor/scalable/apps/fgdesk.svg"
    if [ -d "$DEST" ]; then
        rm -rf "$DEST"
    fi
    refresh_caches
    say "fgdesk removed."
}

refresh_caches() {
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$DATA_HOME/applications" 2>/dev/null || true
    fi
    # Refresh an icon cache that already exists; never create one, since a stale
    # cache hides icons that other programs install later.
    if [ -f "$DATA_HOME/icons/hicolor/icon-theme.cache" ] && command -v gtk-update-icon-cache >/dev/null 2>&1; then
        gtk-update-icon-cache -q -t "$DATA_HOME/icons/hicolor" 2>/dev/null || true
    fi
}

if [ "${1:-}" = "--uninstall" ]; then
    uninstall
    exit 0
fi
case "${1:-}" in -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;; esac

DESKTOP_ONLY=0
if [ "${1:-}" = "--desktop-only" ]; then
    # fgdesk was installed with pip: its `fgdesk` command is already on PATH.
    DESKTOP_ONLY=1
    shift
    command -v fgdesk >/dev/null 2>&1 || die "no fgdesk command on PATH; pip install fgdesk first"
fi

# Where the bundle and the files to install come from: a built bundle that carries its
# own share/ folder, or a source checkout (packaging/ and fgdesk/resources/).
if [ "$DESKTOP_ONLY" = 1 ]; then
    if [ -d "$HERE/share" ]; then BUNDLE="$HERE"; else BUNDLE="$HERE/.no-bundle"; fi
elif [ $# -ge 1 ]; then
    BUNDLE="$(cd "$1" && pwd)" || die "no such folder: $1"
elif [ -x "$HERE/fgdesk" ] && [ -d "$HERE/share" ]; then
    BUNDLE="$HERE"
else
    BUNDLE="$(cd "$HERE/.." && pwd)/dist/fgdesk"
fi
if [ "$DESKTOP_ONLY" = 0 ]; then
    [ -x "$BUNDLE/fgdesk" ] || die "$BUNDLE/fgdesk not found; build the bundle first (python3 dev.py package)"
    [ -x "$BUNDLE/fgdesk-app" ] || die "$BUNDLE/fgdesk-app not found; the bundle is incomplete"
fi

if [ -d "$BUNDLE/share" ]; then
    DESKTOP="$BUNDLE/share/applications/fgdesk.desktop"
    METAINFO="$BUNDLE/share/metainfo/$APP_ID.metainfo.xml"
    ICONS="$BUNDLE/share/icons/hicolor"
    png_for() { printf '%s' "$ICONS/${1}x${1}/apps/fgdesk.png"; }
    SVG="$ICONS/scalable/apps/fgdesk.svg"
else
    SOURCE="$(cd "$HERE/.." && pwd)"
    DESKTOP="$SOURCE/packaging/fgdesk.desktop"
    METAINFO="$SOURCE/packaging/$APP_ID.metainfo.xml"
    png_for() { printf '%s' "$SOURCE/fgdesk/resources/icons/fgdesk-$1.png"; }
    SVG="$SOURCE/fgdesk/resources/fgdesk.svg"
fi
[ -f "$DESKTOP" ] || die "desktop entry not found: $DESKTOP"

if [ "$DESKTOP_ONLY" = 0 ]; then
    case "$DEST" in
        "$BUNDLE"|"$BUNDLE"/*) die "the bundle is already installed at $DEST; nothing to copy" ;;
    esac

    say "Installing fgdesk into $DEST"
    mkdir -p "$PREFIX/opt" "$BIN"
    # Copy next to the old install first, then swap, so a failed copy leaves it intact.
    rm -rf "$DEST.new"
    cp -R "$BUNDLE" "$DEST.new"
    rm -rf "$DEST.new/share" "$DEST.new/install.sh"
    rm -rf "$DEST.old"
    if [ -d "$DEST" ]; then mv "$DEST" "$DEST.old"; fi
    mv "$DEST.new" "$DEST"
    rm -rf "$DEST.old"

    for name in fgdesk fgdesk-app; do
        ln -sfn "$DEST/$name" "$BIN/$name"
    done
fi

mkdir -p "$DATA_HOME/applications"
if [ "$DESKTOP_ONLY" = 1 ]; then
    cp "$DESKTOP" "$DATA_HOME/applications/fgdesk.desktop"
else
    # Point Exec and TryExec at the installed program, since ~/.local/bin is not on
    # every desktop session's PATH.
    sed -e "s|^Exec=fgdesk|Exec=\"$DEST/fgdesk\"|" \
        -e "s|^TryExec=fgdesk|TryExec=$DEST/fgdesk|" \
        "$DESKTOP" > "$DATA_HOME/applications/fgdesk.desktop"
fi
chmod 644 "$DATA_HOME/applications/fgdesk.desktop"

if [ -f "$METAINFO" ]; then
    mkdir -p "$DATA_HOME/metainfo"
    cp "$METAINFO" "$DATA_HOME/metainfo/$APP_ID.metainfo.xml"
fi

for size in $SIZES; do
    png="$(png_for "$size")"
    if [ -f "$png" ]; then
        mkdir -p "$DATA_HOME/icons/hicolor/${size}x${size}/apps"
        cp "$png" "$DATA_HOME/icons/hicolor/${size}x${size}/apps/fgdesk.png"
    fi
done
if [ -f "$SVG" ]; then
    mkdir -p "$DATA_HOME/icons/hicolor/scalable/apps"
    cp "$SVG" "$DATA_HOME/icons/hicolor/scalable/apps/fgdesk.svg"
fi
refresh_caches

if [ "$DESKTOP_ONLY" = 1 ]; then
    say "Installed the menu entry and icons; the menu runs: $(command -v fgdesk)"
    exit 0
fi
say "Installed. Run 'fgdesk' from a terminal or pick fgdesk from the application menu."
case ":$PATH:" in
    *":$BIN:"*) ;;
    *) say "Note: $BIN is not on your PATH; add it to use 'fgdesk' from a terminal." ;;
esac
