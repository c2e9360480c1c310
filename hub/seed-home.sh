#!/bin/sh
# Give a student's home (the current folder) what it lacks from the course, run AS THAT STUDENT (so it can
# write nowhere the student could not): a copy of each student notebook, links to the course's dataset,
# reference figures and each cached model in their data folder, a private temporary folder. It never
# replaces anything already there, and prints what it adds.
#   sh hub/seed-home.sh NOTEBOOKS_FOLDER DATA_FOLDER
# make hub runs it for each student (helpers.hub.seed_workspace); hub/z2jh-values.yaml at every start
# of a student's container.
set -eu
notebooks=$1
data=$2
umask 022
for folder in notebooks data data/models .tmp; do
    if [ ! -e "$folder" ] && [ ! -L "$folder" ]; then mkdir -p "$folder" && echo "$folder"; fi
done
for file in "$notebooks"/*.ipynb; do
    copy=notebooks/${file##*/}
    if [ -f "$file" ] && [ ! -e "$copy" ] && [ ! -L "$copy" ]; then cp "$file" "$copy" && echo "$copy"; fi
done
for target in "$data"/FashionMNIST "$data"/reference "$data"/models/*.pt; do
    case $target in "$data"/models/*) link=data/models/${target##*/} ;; *) link=data/${target##*/} ;; esac
    if [ -e "$target" ] && [ ! -e "$link" ] && [ ! -L "$link" ]; then ln -s "$target" "$link" && echo "$link"; fi
done
