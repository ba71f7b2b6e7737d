//! WASI preview1 as Envoy provides it to proxy-wasm modules: clocks read the virtual clock,
//! randomness comes from the host's seeded generator, stdout/stderr become info/error logs,
//! and there is no filesystem, no arguments and no sockets.

use wasmtime::{Caller, Linker, Result, format_err};

use crate::memory::{read, write, write_u32, write_u64};
use crate::state::VmState;
use crate::types::LogLevel;

type Ctx<'a> = Caller<'a, VmState>;

const SUCCESS: i32 = 0;
const EBADF: i32 = 8;
const EFAULT: i32 = 21;
const EINVAL: i32 = 28;
const ENOENT: i32 = 44;
const ENOSYS: i32 = 52;
const ENOTDIR: i32 = 20;
const ENOTSUP: i32 = 58;

/// Envoy's cap on one `random_get` call.
const RANDOM_GET_MAX: u32 = 64 * 1024;

fn is_stdio(fd: i32) -> bool {
    fd == 1 || fd == 2
}

fn stdio_only(fd: i32) -> Result<i32> {
    Ok(if is_stdio(fd) { SUCCESS } else { EBADF })
}

macro_rules! fault_if {
    ($cond:expr) => {
        if !$cond {
            return Ok(EFAULT);
        }
    };
}

pub(crate) fn link(linker: &mut Linker<VmState>) -> Result<()> {
    // Old toolchains import `wasi_unstable`; Envoy serves both names the same way.
    for module in ["wasi_snapshot_preview1", "wasi_unstable"] {
        linker.func_wrap(module, "fd_write", fd_write)?;
        linker.func_wrap(
            module,
            "fd_pwrite",
            |c: Ctx<'_>, fd: i32, iovs: i32, n: i32, _off: i64, ret: i32| {
                if !is_stdio(fd) {
                    return Ok(EBADF);
                }
                fd_write(c, fd, iovs, n, ret)
            },
        )?;
        linker.func_wrap(module, "fd_read", |_: i32, _: i32, _: i32, _: i32| ENOSYS)?;
        linker.func_wrap(
            module,
            "fd_pread",
            |_: i32, _: i32, _: i32, _: i64, _: i32| ENOSYS,
        )?;
        linker.func_wrap(module, "fd_seek", |_: i32, _: i64, _: i32, _: i32| SUCCESS)?;
        linker.func_wrap(module, "fd_close", |_: i32| SUCCESS)?;
        linker.func_wrap(module, "fd_fdstat_get", fd_fdstat_get)?;
        linker.func_wrap(module, "fd_fdstat_set_flags", |_: i32, _: i32| ENOSYS)?;
        linker.func_wrap(module, "fd_fdstat_set_rights", |fd: i32, _: i64, _: i64| {
            stdio_only(fd)
        })?;
        linker.func_wrap(module, "fd_advise", |_: i32, _: i64, _: i64, _: i32| {
            SUCCESS
        })?;
        linker.func_wrap(module, "fd_allocate", |fd: i32, _: i64, _: i64| {
            stdio_only(fd)
        })?;
        linker.func_wrap(module, "fd_datasync", stdio_only)?;
        linker.func_wrap(module, "fd_sync", stdio_only)?;
        linker.func_wrap(module, "fd_filestat_get", |_: i32, _: i32| EBADF)?;
        linker.func_wrap(module, "fd_filestat_set_size", |fd: i32, _: i64| {
            stdio_only(fd)
        })?;
        linker.func_wrap(
            module,
            "fd_filestat_set_times",
            |fd: i32, _: i64, _: i64, _: i32| stdio_only(fd),
        )?;
        linker.func_wrap(module, "fd_prestat_get", |_: i32, _: i32| EBADF)?;
        linker.func_wrap(module, "fd_prestat_dir_name", |_: i32, _: i32, _: i32| {
            ENOSYS
        })?;
        linker.func_wrap(
            module,
            "fd_readdir",
            |mut c: Ctx<'_>, _: i32, _: i32, _: i32, _: i64, ret: i32| {
                fault_if!(write_u32(&mut c, ret, 0)?);
                Ok(ENOTDIR)
            },
        )?;
        linker.func_wrap(module, "fd_renumber", |_: i32, _: i32| ENOTSUP)?;
        linker.func_wrap(module, "fd_tell", |mut c: Ctx<'_>, fd: i32, ret: i32| {
            if !is_stdio(fd) {
                return Ok(EBADF);
            }
            fault_if!(write_u64(&mut c, ret, 0)?);
            Ok(SUCCESS)
        })?;
        linker.func_wrap(
            module,
            "path_open",
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32, _: i32| ENOENT,
        )?;
        linker.func_wrap(
            module,
            "path_filestat_get",
            |_: i32, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(
            module,
            "path_filestat_set_times",
            |_: i32, _: i32, _: i32, _: i32, _: i64, _: i64, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(module, "path_create_directory", |_: i32, _: i32, _: i32| {
            ENOTSUP
        })?;
        linker.func_wrap(
            module,
            "path_link",
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(
            module,
            "path_readlink",
            |mut c: Ctx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, ret: i32| {
                fault_if!(write_u32(&mut c, ret, 0)?);
                Ok(ENOTSUP)
            },
        )?;
        linker.func_wrap(module, "path_remove_directory", |_: i32, _: i32, _: i32| {
            ENOTSUP
        })?;
        linker.func_wrap(
            module,
            "path_rename",
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(
            module,
            "path_symlink",
            |_: i32, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(module, "path_unlink_file", |_: i32, _: i32, _: i32| ENOTSUP)?;
        linker.func_wrap(
            module,
            "sock_accept",
            |mut c: Ctx<'_>, _: i32, _: i32, ret: i32| {
                fault_if!(write_u32(&mut c, ret, 0)?);
                Ok(ENOTSUP)
            },
        )?;
        linker.func_wrap(
            module,
            "sock_recv",
            |_: i32, _: i32, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(
            module,
            "sock_send",
            |_: i32, _: i32, _: i32, _: i32, _: i32| ENOTSUP,
        )?;
        linker.func_wrap(module, "sock_shutdown", |_: i32, _: i32| ENOTSUP)?;
        linker.func_wrap(module, "environ_get", environ_get)?;
        linker.func_wrap(module, "environ_sizes_get", environ_sizes_get)?;
        linker.func_wrap(module, "args_get", |_: i32, _: i32| SUCCESS)?;
        linker.func_wrap(
            module,
            "args_sizes_get",
            |mut c: Ctx<'_>, argc: i32, size: i32| {
                fault_if!(write_u32(&mut c, argc, 0)? && write_u32(&mut c, size, 0)?);
                Ok(SUCCESS)
            },
        )?;
        linker.func_wrap(module, "clock_time_get", clock_time_get)?;
        linker.func_wrap(
            module,
            "clock_res_get",
            |mut c: Ctx<'_>, id: i32, ret: i32| {
                if id != 0 && id != 1 {
                    return Ok(ENOTSUP);
                }
                fault_if!(write_u64(&mut c, ret, 1)?);
                Ok(SUCCESS)
            },
        )?;
        linker.func_wrap(module, "random_get", random_get)?;
        linker.func_wrap(module, "sched_yield", || SUCCESS)?;
        linker.func_wrap(
            module,
            "poll_oneoff",
            |mut c: Ctx<'_>, _: i32, _: i32, _: i32, ret: i32| {
                fault_if!(write_u32(&mut c, ret, 0)?);
                Ok(SUCCESS)
            },
        )?;
        linker.func_wrap(module, "proc_exit", |c: Ctx<'_>, code: i32| -> Result<()> {
            let _ = c;
            // Rust follows proc_exit with `unreachable`; trapping here names the real cause.
            Err(format_err!("module called proc_exit({code})"))
        })?;
    }
    Ok(())
}

fn fd_write(mut c: Ctx<'_>, fd: i32, iovs: i32, iovs_len: i32, ret: i32) -> Result<i32> {
    let level = match fd {
        1 => LogLevel::Info,
        2 => LogLevel::Error,
        _ => return Ok(EBADF),
    };
    let mut text = Vec::new();
    for i in 0..iovs_len.max(0) {
        let Some(iov) = read(&mut c, iovs.wrapping_add(i * 8), 8)? else {
            return Ok(EFAULT);
        };
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        let Some(chunk) = read(&mut c, ptr, len)? else {
            return Ok(EFAULT);
        };
        text.extend_from_slice(&chunk);
    }
    let written = text.len();
    if written > 0 {
        // Envoy logs each write as one line, without its trailing newline.
        if text.last() == Some(&b'\n') {
            text.pop();
        }
        c.data_mut()
            .log(level, String::from_utf8_lossy(&text).into_owned());
    }
    fault_if!(write_u32(&mut c, ret, written as u32)?);
    Ok(SUCCESS)
}

fn fd_fdstat_get(mut c: Ctx<'_>, fd: i32, ret: i32) -> Result<i32> {
    if !is_stdio(fd) {
        return Ok(EBADF);
    }
    // filetype/flags zero, rights_base = FD_WRITE, rights_inheriting zero.
    let mut stat = [0u8; 24];
    stat[8..16].copy_from_slice(&64u64.to_le_bytes());
    fault_if!(write(&mut c, ret, &stat)?);
    Ok(SUCCESS)
}

fn environ_entries(c: &Ctx<'_>) -> Vec<Vec<u8>> {
    c.data()
        .host
        .borrow()
        .env
        .iter()
        .map(|(k, v)| {
            let mut entry = format!("{k}={v}").into_bytes();
            entry.push(0);
            entry
        })
        .collect()
}

fn environ_sizes_get(mut c: Ctx<'_>, count: i32, size: i32) -> Result<i32> {
    let entries = environ_entries(&c);
    let total: usize = entries.iter().map(Vec::len).sum();
    fault_if!(
        write_u32(&mut c, count, entries.len() as u32)? && write_u32(&mut c, size, total as u32)?
    );
    Ok(SUCCESS)
}

fn environ_get(mut c: Ctx<'_>, mut array: i32, mut buf: i32) -> Result<i32> {
    for entry in environ_entries(&c) {
        fault_if!(write_u32(&mut c, array, buf as u32)? && write(&mut c, buf, &entry)?);
        buf = buf.wrapping_add(entry.len() as i32);
        array = array.wrapping_add(4);
    }
    Ok(SUCCESS)
}

fn clock_time_get(mut c: Ctx<'_>, id: i32, _precision: i64, ret: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "clock_time_get");
    let now = {
        let host = c.data().host.borrow();
        match id {
            0 => host.now_nanos,
            1 => host.monotonic_nanos,
            _ => return Ok(ENOTSUP),
        }
    };
    fault_if!(write_u64(&mut c, ret, now)?);
    Ok(SUCCESS)
}

fn random_get(mut c: Ctx<'_>, buf: i32, len: i32) -> Result<i32> {
    crate::faults::hostcall!(c, "random_get");
    let len = len as u32;
    if len > RANDOM_GET_MAX {
        return Ok(EINVAL);
    }
    let mut bytes = vec![0u8; len as usize];
    c.data().host.borrow_mut().fill_random(&mut bytes);
    fault_if!(write(&mut c, buf, &bytes)?);
    Ok(SUCCESS)
}
