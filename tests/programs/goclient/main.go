// A Go client for the cgroup backend's tests, built with CGO_ENABLED=0:
// statically linked, its own syscalls, no libc at all, so no LD_PRELOAD
// can reach it; only the kernel can steer it.
//
//	goclient http URL          GET URL (net/http, 2 s), print the body
//	goclient udp ADDR PORT     one unconnected datagram, print the reply (2 s)
//
// Prints one line, like cgclient: the answer, or "error NAME after N ms"
// (the errno's name; ETIMEDOUT when nothing came back in time). Exit 0 on
// an answer.
package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"
)

var t0 = time.Now()

func fail(err error) {
	name := "other"
	var errno syscall.Errno
	var ne net.Error
	switch {
	case errors.As(err, &errno):
		switch errno {
		case syscall.EPERM:
			name = "EPERM"
		case syscall.EACCES:
			name = "EACCES"
		case syscall.ECONNREFUSED:
			name = "ECONNREFUSED"
		case syscall.ENETUNREACH:
			name = "ENETUNREACH"
		case syscall.EHOSTUNREACH:
			name = "EHOSTUNREACH"
		case syscall.ECONNRESET:
			name = "ECONNRESET"
		case syscall.ETIMEDOUT:
			name = "ETIMEDOUT"
		}
	case errors.As(err, &ne) && ne.Timeout():
		name = "ETIMEDOUT"
	}
	fmt.Printf("error %s after %d ms\n", name, time.Since(t0).Milliseconds())
	fmt.Fprintf(os.Stderr, "goclient: %v\n", err)
	os.Exit(1)
}

func main() {
	if len(os.Args) == 3 && os.Args[1] == "http" {
		// No proxy from the environment: the request must go where asked.
		c := http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
		resp, err := c.Get(os.Args[2])
		if err != nil {
			fail(err)
		}
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			fail(err)
		}
		fmt.Println(strings.TrimSpace(string(body)))
		return
	}
	if len(os.Args) == 4 && os.Args[1] == "udp" {
		port, err := strconv.Atoi(os.Args[3])
		if err != nil {
			fmt.Fprintln(os.Stderr, "goclient: bad port")
			os.Exit(2)
		}
		pc, err := net.ListenPacket("udp4", ":0")
		if err != nil {
			fail(err)
		}
		dst := &net.UDPAddr{IP: net.ParseIP(os.Args[2]), Port: port}
		if _, err := pc.WriteTo([]byte("ping"), dst); err != nil {
			fail(err)
		}
		pc.SetReadDeadline(time.Now().Add(2 * time.Second))
		buf := make([]byte, 4096)
		n, _, err := pc.ReadFrom(buf)
		if err != nil {
			fail(err)
		}
		fmt.Println(string(buf[:n]))
		return
	}
	fmt.Fprintln(os.Stderr, "usage: goclient http URL | goclient udp ADDR PORT")
	os.Exit(2)
}
