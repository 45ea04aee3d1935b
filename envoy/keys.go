package envoy

// Log attribute keys, shared so every line names things the same way.
const (
	keyEnvoy      = "envoy"
	keyExperiment = "experiment"
	keyRound      = "round"
	keyErr        = "err"
	keyRPC        = "rpc"
	keyRetryIn    = "retry_in"
	keyDirector   = "director"
	keyShard      = "shard"
	keyWorkDir    = "work_dir"
	keyPeriod     = "period"
	keyBytes      = "bytes"
	keyTensors    = "tensors"
	keyDataSize   = "data_size"
	keyMetrics    = "metrics"
	keyTook       = "took"
	keyCode       = "code"
	keyLog        = "log"
	keyPath       = "path"
	keyTask       = "task"
	keySleep      = "sleep"
	keyJob        = "job"
	keyHint       = "hint" // what to do about an error
)
