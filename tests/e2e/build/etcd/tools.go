//go:build tools

// Package tools pins the command built from this wrapper module (see go.mod).
package tools

import _ "go.etcd.io/etcd/server/v3"
