//! libnftables, in-process: the library the `nft` binary is built on (Debian's
//! `libnftables1`, a dependency of the `nftables` package), loaded at run time with
//! `dlopen`, so that no binary links it (a node without it falls back to spawning `nft`)
//! and the same JSON documents are applied as with `nft -j -f -`.
//!
//! Each command runs in a context made for it on the calling thread: libnftables opens its
//! netlink socket when the context is made, so the command lands in the network namespace
//! of the calling thread, exactly as a spawned `nft` would. Calls are serialised within the
//! process (the library keeps some global state); between processes the driver's flock
//! serialises read-modify-write sequences as before.
//!
//! It is the driver's backend only with `META_CNI_NFT=lib` (or [`crate::Backend::Library`]).

use std::ffi::{CStr, CString, c_char, c_int, c_uint, c_void};
use std::sync::{Mutex, OnceLock};

/// The library's file name (its soname; libnftables' ABI has been 1 since 0.9.0).
pub const SONAME: &str = "libnftables.so.1";

/// `NFT_CTX_OUTPUT_JSON` of `<nftables/libnftables.h>`: JSON output, and (with it) the
/// command buffer parsed as JSON first, as `nft -j` does.
const NFT_CTX_OUTPUT_JSON: c_uint = 1 << 4;
/// `NFT_CTX_DEFAULT`: a context with its netlink socket.
const NFT_CTX_DEFAULT: u32 = 0;

type CtxNew = unsafe extern "C" fn(u32) -> *mut c_void;
type CtxFree = unsafe extern "C" fn(*mut c_void);
type OutputSetFlags = unsafe extern "C" fn(*mut c_void, c_uint);
type BufferOn = unsafe extern "C" fn(*mut c_void) -> c_int;
type GetBuffer = unsafe extern "C" fn(*mut c_void) -> *const c_char;
type RunCmd = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;

/// The entry points of a loaded libnftables.
pub struct LibNft {
    ctx_new: CtxNew,
    ctx_free: CtxFree,
    output_set_flags: OutputSetFlags,
    buffer_output: BufferOn,
    buffer_error: BufferOn,
    get_output: GetBuffer,
    get_error: GetBuffer,
    run_cmd: RunCmd,
}

static LIB: OnceLock<Option<LibNft>> = OnceLock::new();
static CALLS: Mutex<()> = Mutex::new(());

/// The library, loaded once; `None` when it is missing or lacks a symbol. (Whether it
/// is used at all is the driver's [`crate::Backend`].)
pub fn get() -> Option<&'static LibNft> {
    LIB.get_or_init(|| {
        let lib = load();
        if lib.is_none() {
            tracing::debug!("{SONAME} not loadable: nftables changes spawn `nft`");
        }
        lib
    })
    .as_ref()
}

fn load() -> Option<LibNft> {
    let name = CString::new(SONAME).ok()?;
    // SAFETY: dlopen/dlsym with NUL-terminated names; each symbol is cast to the
    // signature libnftables.h declares for it. The handle is never closed (the library
    // lives as long as the process).
    unsafe {
        let h = libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if h.is_null() {
            return None;
        }
        let sym = |s: &CStr| {
            let p = libc::dlsym(h, s.as_ptr());
            (!p.is_null()).then_some(p)
        };
        Some(LibNft {
            ctx_new: std::mem::transmute::<*mut c_void, CtxNew>(sym(c"nft_ctx_new")?),
            ctx_free: std::mem::transmute::<*mut c_void, CtxFree>(sym(c"nft_ctx_free")?),
            output_set_flags: std::mem::transmute::<*mut c_void, OutputSetFlags>(sym(
                c"nft_ctx_output_set_flags",
            )?),
            buffer_output: std::mem::transmute::<*mut c_void, BufferOn>(sym(
                c"nft_ctx_buffer_output",
            )?),
            buffer_error: std::mem::transmute::<*mut c_void, BufferOn>(sym(
                c"nft_ctx_buffer_error",
            )?),
            get_output: std::mem::transmute::<*mut c_void, GetBuffer>(sym(
                c"nft_ctx_get_output_buffer",
            )?),
            get_error: std::mem::transmute::<*mut c_void, GetBuffer>(sym(
                c"nft_ctx_get_error_buffer",
            )?),
            run_cmd: std::mem::transmute::<*mut c_void, RunCmd>(sym(c"nft_run_cmd_from_buffer")?),
        })
    }
}

/// A failed command: libnftables' return code and its error buffer (the text `nft`
/// prints on stderr).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// `nft_run_cmd_from_buffer`'s return value.
    pub rc: c_int,
    /// The error buffer.
    pub stderr: String,
}

/// Frees the context however the call ends.
struct Ctx<'a>(&'a LibNft, *mut c_void);

impl Drop for Ctx<'_> {
    fn drop(&mut self) {
        // SAFETY: the pointer came from nft_ctx_new and is freed once.
        unsafe { (self.0.ctx_free)(self.1) }
    }
}

fn buffer(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: libnftables returns a NUL-terminated buffer owned by the context, which
    // is alive here.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

impl LibNft {
    /// Runs `cmd` (a JSON document, or nft syntax such as `list table inet x`) as `nft`
    /// would with `-j` when `json`; the output buffer on success.
    pub fn run(&self, cmd: &str, json: bool) -> Result<String, Failure> {
        let c = CString::new(cmd).map_err(|_| Failure {
            rc: -1,
            stderr: "the command contains a NUL byte".into(),
        })?;
        let _serial = CALLS.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the calls follow libnftables.h: a context from nft_ctx_new, configured,
        // used for one command, its buffers read while it lives, then freed (Ctx).
        unsafe {
            let raw = (self.ctx_new)(NFT_CTX_DEFAULT);
            if raw.is_null() {
                return Err(Failure {
                    rc: -1,
                    stderr: "nft_ctx_new failed (cannot open a netlink socket?)".into(),
                });
            }
            let ctx = Ctx(self, raw);
            if json {
                (self.output_set_flags)(ctx.1, NFT_CTX_OUTPUT_JSON);
            }
            (self.buffer_output)(ctx.1);
            (self.buffer_error)(ctx.1);
            let rc = (self.run_cmd)(ctx.1, c.as_ptr());
            let out = buffer((self.get_output)(ctx.1));
            if rc == 0 {
                Ok(out)
            } else {
                Err(Failure {
                    rc,
                    stderr: buffer((self.get_error)(ctx.1)),
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nul_byte_is_refused_before_the_library() {
        if let Some(lib) = get() {
            let e = lib.run("list\0tables", false).unwrap_err();
            assert_eq!(e.rc, -1);
        }
    }
}
