# The instance id from EC2's metadata service, IMDSv2 only (inserted into user-data.sh.tmpl).
IMDS=http://169.254.169.254/latest
# IMDSv2 session token lifetime in seconds (AWS allows 1 to 21600); we need it for one call.
IMDS_TOKEN_TTL=300

imds_token=""
for _ in $(seq 1 30); do
  imds_token="$(curl -sf -X PUT "$IMDS/api/token" \
    -H "X-aws-ec2-metadata-token-ttl-seconds: $IMDS_TOKEN_TTL")" && break
  sleep 2
done
if [ -z "$imds_token" ]; then
  echo "flotilla: the instance metadata service gave no IMDSv2 token; not starting the agent" >&2
  exit 1
fi
instance_id="$(curl -sf -H "X-aws-ec2-metadata-token: $imds_token" "$IMDS/meta-data/instance-id")"
