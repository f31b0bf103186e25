// Command vcsim starts govmomi's vCenter simulator (the VPX model) for scmt's
// conformance tests: TLS on 127.0.0.1 with an ephemeral port, one line of JSON
// on stdout ({"url": ..., "thumbprint": ...}) once it listens, and a clean stop
// on SIGTERM or SIGINT.
//
// Build (Debian packages golang-go and golang-github-vmware-govmomi-dev):
//
//	GO111MODULE=off GOPATH=/usr/share/gocode go build -o vcsim .
package main

import (
	"crypto/sha256"
	"crypto/tls"
	"encoding/json"
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/vmware/govmomi/simulator"
)

func main() {
	user := flag.String("user", "scmt", "login user")
	pass := flag.String("password", "", "login password (required)")
	vms := flag.Int("vms", 2, "virtual machines per resource pool / host")
	clusterHosts := flag.Int("cluster-hosts", 3, "hosts per cluster")
	flag.Parse()
	if *pass == "" {
		fmt.Fprintln(os.Stderr, "vcsim: -password is required")
		os.Exit(2)
	}

	model := simulator.VPX()
	model.Machine = *vms
	model.ClusterHost = *clusterHosts
	if err := model.Create(); err != nil {
		fmt.Fprintln(os.Stderr, "vcsim: create model:", err)
		os.Exit(1)
	}
	defer model.Remove()

	model.Service.TLS = new(tls.Config)
	model.Service.Listen = &url.URL{Host: "127.0.0.1:0", User: url.UserPassword(*user, *pass)}
	server := model.Service.NewServer()
	defer server.Close()

	sum := sha256.Sum256(server.Certificate().Raw)
	parts := make([]string, len(sum))
	for i, b := range sum {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	u := *server.URL
	u.User = nil
	out, _ := json.Marshal(map[string]string{
		"url":        u.String(),
		"thumbprint": strings.Join(parts, ":"),
	})
	fmt.Println(string(out))

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	<-sig
}
