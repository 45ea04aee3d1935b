// Package testjob holds the training command of fedplane's test and
// benchmark jobs: train.py, which adds a constant of its shard to every
// float of the model (the e2e tests and fedbench's failover figure run it).
package testjob

import _ "embed"

// TrainPy is train.py's text, written into each job folder that runs it.
//
//go:embed train.py
var TrainPy []byte
