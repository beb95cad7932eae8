// The churn phase's sender for the cgroup backend: what churn.py send
// does, as a static Go binary (CGO_ENABLED=0: its own syscalls, no libc,
// so no LD_PRELOAD reaches it). Run under `ldsaref run --cgroup`, only the
// kernel's table steers it.
//
//	gosender NAME LOG
//
// Sends "NAME gSEQ PROTO DST" to both client subnets for as long as it
// lives: UDP with sendto on one unconnected socket (25/s), and TCP, a new
// connection each time (5/s, 1 s to connect). The "g" before the sequence
// number tells the receivers' logs this sender from the library's. Logs
// "TIME PROTO DST SEQ RESULT" per attempt, like churn.py: ok, the errno's
// name, or timeout.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"
)

var dsts = []string{"198.18.0.5", "198.19.0.5"}

const port = 9000

type logger struct {
	mu   sync.Mutex
	w    *bufio.Writer
	last time.Time
}

// line writes one line, flushed at least every 0.2 s (the verdict reads
// the file after the sender is killed).
func (l *logger) line(s string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.w.WriteString(s + "\n")
	if time.Since(l.last) > 200*time.Millisecond {
		l.w.Flush()
		l.last = time.Now()
	}
}

func stamp(t time.Time) string {
	return fmt.Sprintf("%d.%06d", t.Unix(), t.Nanosecond()/1000)
}

func result(err error) string {
	if err == nil {
		return "ok"
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "timeout"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		names := map[syscall.Errno]string{
			syscall.EPERM: "EPERM", syscall.EACCES: "EACCES",
			syscall.ENETUNREACH: "ENETUNREACH", syscall.EHOSTUNREACH: "EHOSTUNREACH",
			syscall.ECONNREFUSED: "ECONNREFUSED", syscall.ETIMEDOUT: "ETIMEDOUT",
			syscall.ENODEV: "ENODEV", syscall.EINVAL: "EINVAL",
			// a marked policy matched, its SA not there yet (larval)
			syscall.EREMOTE: "EREMOTE",
		}
		if n, ok := names[errno]; ok {
			return n
		}
		return fmt.Sprintf("errno%d", int(errno))
	}
	return "other"
}

func udp(name string, log *logger) {
	c, err := net.ListenPacket("udp4", "0.0.0.0:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, "gosender: udp socket:", err)
		os.Exit(1)
	}
	for seq := 1; ; seq++ {
		dst := dsts[seq%2]
		t := time.Now()
		_, err := c.WriteTo([]byte(fmt.Sprintf("%s g%d udp %s\n", name, seq, dst)),
			&net.UDPAddr{IP: net.ParseIP(dst), Port: port})
		log.line(fmt.Sprintf("%s udp %s g%d %s", stamp(t), dst, seq, result(err)))
		time.Sleep(40 * time.Millisecond)
	}
}

func tcp(name string, log *logger) {
	for seq := 1; ; seq++ {
		dst := dsts[seq%2]
		t := time.Now()
		c, err := net.DialTimeout("tcp4", fmt.Sprintf("%s:%d", dst, port), time.Second)
		if err == nil {
			c.SetDeadline(time.Now().Add(time.Second))
			_, err = c.Write([]byte(fmt.Sprintf("%s g%d tcp %s\n", name, seq, dst)))
			c.Close()
		}
		log.line(fmt.Sprintf("%s tcp %s g%d %s", stamp(t), dst, seq, result(err)))
		time.Sleep(200 * time.Millisecond)
	}
}

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: gosender NAME LOG")
		os.Exit(2)
	}
	f, err := os.OpenFile(os.Args[2], os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "gosender:", err)
		os.Exit(1)
	}
	log := &logger{w: bufio.NewWriterSize(f, 1<<16), last: time.Now()}
	go udp(os.Args[1], log)
	go tcp(os.Args[1], log)
	fmt.Println("ready")
	select {}
}
