# The instance name from GCE's metadata server (inserted into user-data.sh.tmpl). The name is
# the instance's id in the Compute API, so it is the agent id the provisioner knows it by.
METADATA=http://metadata.google.internal/computeMetadata/v1
instance_id=""
for _ in $(seq 1 30); do
  instance_id="$(curl -sf -H "Metadata-Flavor: Google" "$METADATA/instance/name")" && break
  sleep 2
done
if [ -z "$instance_id" ]; then
  echo "flotilla: the metadata server gave no instance name; not starting the agent" >&2
  exit 1
fi
