#!/bin/sh
# Regenerates server/page.c (the chat page as a C string) from server/page.html.
# Run after editing page.html: sh server/embed_page.sh. tests/server checks it is current.
set -eu
cd "$(dirname "$0")"
{
  echo "/* page.c - GENERATED from server/page.html by server/embed_page.sh; do not edit."
  echo " * The chat page served at / (self-contained: no external fetches). */"
  echo "#include \"server.h\""
  echo ""
  echo "const char srv_page_html[] ="
  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/    "/' -e 's/$/\\n"/' page.html
  echo "    ;"
  echo "const size_t srv_page_len = sizeof srv_page_html - 1;"
} > page.c.tmp
mv page.c.tmp page.c
