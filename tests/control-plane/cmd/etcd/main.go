// etcd for the test control plane (Debian's etcd 3.4 is too old for recent API servers).
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
