//! One line to syslog (facility daemon, ident "ldsaref"): how runs that
//! nobody watches, such as updown's background apply, report.

use std::ffi::CString;

pub fn error(msg: &str) {
    send(libc::LOG_ERR, msg);
}

pub fn info(msg: &str) {
    send(libc::LOG_INFO, msg);
}

fn send(level: libc::c_int, msg: &str) {
    // A NUL inside the message would end it early: none of ours has one.
    let Ok(text) = CString::new(msg.replace('\0', " ")) else {
        return;
    };
    // SAFETY: both strings are NUL-terminated and outlive the calls; the
    // format "%s" takes exactly the one string argument given. openlog
    // keeps the ident pointer, so it is a static string. Without a syslog
    // daemon the message is dropped, which is all a report can do then.
    unsafe {
        libc::openlog(c"ldsaref".as_ptr(), libc::LOG_PID, libc::LOG_DAEMON);
        libc::syslog(level, c"%s".as_ptr(), text.as_ptr());
        libc::closelog();
    }
}
