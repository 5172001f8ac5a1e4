#!/usr/bin/env bash
# Stop a background book run on the GPU machine (patterns in brackets so pkill does not match its caller).
pkill -f "[l]ab/gpu/edition.sh"; pkill -f "[s]cripts/gpu/chapters.sh"; pkill -f "[-]m layerwise.book"
sleep 2; pkill -f "[i]pykernel_launcher"; true
