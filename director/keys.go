package director

// Log attribute keys, shared so every line names things the same way.
const (
	keyEnvoy    = "envoy"
	keyErr      = "err"
	keyMethod   = "method"
	keyLastSeen = "last_seen"
	keyReason   = "reason"
	keyGRPC     = "grpc"
	keyDataDir  = "data_dir"
	keyVersion  = "version"
)

// More keys of the experiment lifecycle.
const (
	keyJob   = "job"
	keyRound = "round"
)
