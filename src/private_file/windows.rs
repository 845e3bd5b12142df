//! The Windows side of private files: a protected DACL with one entry, full access for the
//! current user (the SID of this process's token), given to a file or pipe when it is created.
//!
//! This is the crate's one module with `unsafe` code: Win32 security calls have no safe
//! wrapper in std. Each block states what makes it sound; every buffer the system allocates
//! (`LocalAlloc`) is owned by a [`Local`] that frees it.
#![allow(unsafe_code)]

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io;
use std::os::windows::ffi::OsStrExt as _;
use std::os::windows::io::{AsRawHandle, FromRawHandle as _, OwnedHandle};
use std::path::Path;
use std::ptr::null_mut;

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_LOCK_VIOLATION, ERROR_SHARING_VIOLATION, GENERIC_READ,
    GENERIC_WRITE, HANDLE, INVALID_HANDLE_VALUE, LocalFree,
};
use windows_sys::Win32::Security::Authorization::{
    ConvertSecurityDescriptorToStringSecurityDescriptorW, ConvertSidToStringSidW,
    ConvertStringSecurityDescriptorToSecurityDescriptorW, GetSecurityInfo, SDDL_REVISION_1,
    SE_FILE_OBJECT, SetSecurityInfo,
};
use windows_sys::Win32::Security::{
    ACL, DACL_SECURITY_INFORMATION, GetSecurityDescriptorDacl, GetTokenInformation,
    OWNER_SECURITY_INFORMATION, PROTECTED_DACL_SECURITY_INFORMATION, PSECURITY_DESCRIPTOR, PSID,
    SECURITY_ATTRIBUTES, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::Storage::FileSystem::{
    CREATE_NEW, CreateDirectoryW, CreateFileW, FILE_ATTRIBUTE_NORMAL, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Memory the system allocated with `LocalAlloc` for us; freed on drop.
struct Local(*mut core::ffi::c_void);

impl Drop for Local {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the pointer came from a Win32 call documented to allocate it with
            // LocalAlloc, is owned by this value alone and freed only here.
            unsafe { LocalFree(self.0) };
        }
    }
}

impl Local {
    /// The NUL-terminated UTF-16 string this holds.
    fn to_string_lossy(&self) -> String {
        let p = self.0.cast::<u16>().cast_const();
        if p.is_null() {
            return String::new();
        }
        let mut len = 0;
        // SAFETY: the system returned a NUL-terminated wide string: every unit read up to and
        // including the NUL lies inside its allocation.
        unsafe {
            while *p.add(len) != 0 {
                len += 1;
            }
            String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
        }
    }
}

fn wide(text: &OsStr) -> Vec<u16> {
    text.encode_wide().chain(std::iter::once(0)).collect()
}

fn check(ok: windows_sys::core::BOOL) -> io::Result<()> {
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn check_status(status: u32) -> io::Result<()> {
    if status == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(status as i32))
    }
}

/// The current user's SID as text (`S-1-5-21-…`), from this process's token.
fn current_user_sid() -> io::Result<String> {
    let mut raw: HANDLE = null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo-handle that needs no closing; `raw` is a valid
    // out pointer.
    check(unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_QUERY, &mut raw) })?;
    // SAFETY: OpenProcessToken succeeded, so `raw` is a token handle we own.
    let token = unsafe { OwnedHandle::from_raw_handle(raw) };
    let mut len = 0u32;
    // SAFETY: a size query: no buffer, `len` receives the size needed. It "fails" with
    // ERROR_INSUFFICIENT_BUFFER by design.
    unsafe { GetTokenInformation(token.as_raw_handle(), TokenUser, null_mut(), 0, &mut len) };
    // u64 units keep the TOKEN_USER (pointer-aligned) properly aligned.
    let mut buf = vec![0u64; (len as usize).div_ceil(8).max(1)];
    // SAFETY: `buf` has at least `len` writable bytes.
    check(unsafe {
        GetTokenInformation(
            token.as_raw_handle(),
            TokenUser,
            buf.as_mut_ptr().cast(),
            len,
            &mut len,
        )
    })?;
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID points into `buf`, which
    // outlives its use below.
    let sid: PSID = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    sid_text(sid)
}

fn sid_text(sid: PSID) -> io::Result<String> {
    let mut text = null_mut();
    // SAFETY: `sid` is a valid SID; `text` receives a LocalAlloc'd string owned by `Local`.
    check(unsafe { ConvertSidToStringSidW(sid, &mut text) })?;
    Ok(Local(text.cast()).to_string_lossy())
}

/// What the descriptor is for: a folder's entry is also inherited by what is created in it.
#[derive(Clone, Copy)]
enum Kind {
    File,
    Folder,
}

/// A self-relative security descriptor admitting the current user only.
struct UserOnly(Local);

impl UserOnly {
    fn new(kind: Kind) -> io::Result<Self> {
        let sid = current_user_sid()?;
        // P: protected, nothing inherited from the parent; FA: file all access.
        let inherit = match kind {
            Kind::File => "",
            Kind::Folder => "OICI",
        };
        // O: the owner is the user too, not a default (an elevated process's would be the
        // Administrators group), so that a client can tell our pipe from another user's.
        let sddl = wide(OsStr::new(&format!("O:{sid}D:P(A;{inherit};FA;;;{sid})")));
        let mut sd: PSECURITY_DESCRIPTOR = null_mut();
        // SAFETY: `sddl` is NUL-terminated; `sd` receives a LocalAlloc'd descriptor that `Local`
        // owns from here on.
        check(unsafe {
            ConvertStringSecurityDescriptorToSecurityDescriptorW(
                sddl.as_ptr(),
                SDDL_REVISION_1,
                &mut sd,
                null_mut(),
            )
        })?;
        Ok(Self(Local(sd)))
    }

    /// Attributes pointing at this descriptor; valid while `self` lives.
    fn attributes(&self) -> SECURITY_ATTRIBUTES {
        SECURITY_ATTRIBUTES {
            nLength: std::mem::size_of::<SECURITY_ATTRIBUTES>() as u32,
            lpSecurityDescriptor: self.0.0,
            bInheritHandle: 0,
        }
    }

    /// The DACL inside the descriptor (borrowed from it).
    fn dacl(&self) -> io::Result<*mut ACL> {
        let (mut present, mut defaulted) = (0, 0);
        let mut dacl: *mut ACL = null_mut();
        // SAFETY: `self.0` is a valid descriptor; the out pointers are valid.
        check(unsafe {
            GetSecurityDescriptorDacl(self.0.0, &mut present, &mut dacl, &mut defaulted)
        })?;
        Ok(dacl)
    }
}

/// See [`super::create_new`].
pub(super) fn create_new(path: &Path) -> io::Result<File> {
    let descriptor = UserOnly::new(Kind::File)?;
    let attributes = descriptor.attributes();
    let name = wide(path.as_os_str());
    // SAFETY: `name` is NUL-terminated; `attributes` and its descriptor live across the call.
    // Delete sharing lets the file be renamed over its target while open.
    let handle = unsafe {
        CreateFileW(
            name.as_ptr(),
            GENERIC_READ | GENERIC_WRITE,
            FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE,
            &attributes,
            CREATE_NEW,
            FILE_ATTRIBUTE_NORMAL,
            null_mut(),
        )
    };
    if handle == INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: CreateFileW succeeded: a file handle owned by nobody else.
    Ok(unsafe { File::from_raw_handle(handle) })
}

/// See [`super::create_private_dir`].
pub(super) fn create_private_dir(dir: &Path) -> io::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent)?;
    }
    let descriptor = UserOnly::new(Kind::Folder)?;
    let attributes = descriptor.attributes();
    let name = wide(dir.as_os_str());
    // SAFETY: `name` is NUL-terminated; `attributes` and its descriptor live across the call.
    match check(unsafe { CreateDirectoryW(name.as_ptr(), &attributes) }) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {
            if !is_private(dir)? {
                set_dacl(dir, &descriptor)?;
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// See [`super::restrict`]. A file is written anew (its content into a private temporary file
/// replacing it): a descriptor given at creation is the one thing every file system and Wine
/// honour, and the replace is atomic. A folder gets the user-only DACL set in place.
pub(super) fn restrict(path: &Path) -> io::Result<()> {
    if fs::metadata(path)?.is_dir() {
        set_dacl(path, &UserOnly::new(Kind::Folder)?)
    } else {
        super::write_private(path, &fs::read(path)?)
    }
}

fn set_dacl(path: &Path, descriptor: &UserOnly) -> io::Result<()> {
    use std::os::windows::fs::OpenOptionsExt as _;
    const READ_CONTROL: u32 = 0x0002_0000;
    const WRITE_DAC: u32 = 0x0004_0000;
    // Folders open only with backup semantics.
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
    let file = fs::OpenOptions::new()
        .access_mode(READ_CONTROL | WRITE_DAC)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    let dacl = descriptor.dacl()?;
    // SAFETY: `file` is open with WRITE_DAC; `dacl` points into `descriptor`, alive across the
    // call.
    check_status(unsafe {
        SetSecurityInfo(
            file.as_raw_handle(),
            SE_FILE_OBJECT,
            DACL_SECURITY_INFORMATION | PROTECTED_DACL_SECURITY_INFORMATION,
            null_mut(),
            null_mut(),
            dacl,
            null_mut(),
        )
    })
}

/// See [`super::is_private`].
pub(super) fn is_private(path: &Path) -> io::Result<bool> {
    Ok(super::dacl_admits_only(
        &dacl_sddl(path)?,
        &current_user_sid()?,
    ))
}

/// See [`super::describe_access`].
pub(super) fn describe_access(path: &Path) -> io::Result<String> {
    Ok(format!(
        "{} (the current user is {})",
        dacl_sddl(path)?,
        current_user_sid()?
    ))
}

/// The DACL of the file or folder at `path`, in SDDL (`D:P(A;;FA;;;S-1-5-…)`).
fn dacl_sddl(path: &Path) -> io::Result<String> {
    use std::os::windows::fs::OpenOptionsExt as _;
    const READ_CONTROL: u32 = 0x0002_0000;
    // Folders open only with backup semantics.
    const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
    let file = fs::OpenOptions::new()
        .access_mode(READ_CONTROL)
        .custom_flags(FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)?;
    let (sd, _) = security_info(&file, DACL_SECURITY_INFORMATION)?;
    let mut text = null_mut();
    // SAFETY: `sd` is a valid descriptor; `text` receives a LocalAlloc'd string.
    check(unsafe {
        ConvertSecurityDescriptorToStringSecurityDescriptorW(
            sd.0,
            SDDL_REVISION_1,
            DACL_SECURITY_INFORMATION,
            &mut text,
            null_mut(),
        )
    })?;
    Ok(Local(text.cast()).to_string_lossy())
}

/// Whether the object behind `handle` (opened with read access, e.g. the client end of a named
/// pipe) is owned by the current user: a pipe some other user created under our name is not.
pub fn owned_by_current_user(handle: &impl AsRawHandle) -> io::Result<bool> {
    let (sd, owner) = security_info(handle, OWNER_SECURITY_INFORMATION)?;
    let owner = sid_text(owner)?;
    drop(sd);
    Ok(owner.eq_ignore_ascii_case(&current_user_sid()?))
}

/// The security descriptor of the object behind `handle` (open with READ_CONTROL), with the
/// parts `info` asks for, and its owner (null unless asked for; it points into the descriptor).
fn security_info(handle: &impl AsRawHandle, info: u32) -> io::Result<(Local, PSID)> {
    let mut owner: PSID = null_mut();
    let mut sd: PSECURITY_DESCRIPTOR = null_mut();
    // SAFETY: `handle` is open; `sd` receives a LocalAlloc'd descriptor that `Local` owns, and
    // `owner` points into it; the other out pointers may be null.
    let status = unsafe {
        GetSecurityInfo(
            handle.as_raw_handle(),
            SE_FILE_OBJECT,
            info,
            &mut owner,
            null_mut(),
            null_mut(),
            null_mut(),
            &mut sd,
        )
    };
    check_status(status)?;
    Ok((Local(sd), owner))
}

/// Creates an instance of the named pipe `name` that only the current user can open (or add
/// instances to): the same user-only descriptor as private files, given at creation.
pub fn create_private_pipe(
    options: &tokio::net::windows::named_pipe::ServerOptions,
    name: &OsStr,
) -> io::Result<tokio::net::windows::named_pipe::NamedPipeServer> {
    let descriptor = UserOnly::new(Kind::File)?;
    let mut attributes = descriptor.attributes();
    // SAFETY: `attributes` is a valid SECURITY_ATTRIBUTES whose descriptor (`descriptor`)
    // lives until after the call; CreateNamedPipeW copies what it needs.
    unsafe {
        options.create_with_security_attributes_raw(
            name,
            (&mut attributes as *mut SECURITY_ATTRIBUTES).cast(),
        )
    }
}

/// Whether a failed rename or open is another process holding the file (a reader without
/// delete sharing), which passes when it closes the file.
pub(super) fn is_sharing_conflict(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error().map(|code| code as u32),
        Some(ERROR_SHARING_VIOLATION | ERROR_ACCESS_DENIED | ERROR_LOCK_VIOLATION)
    )
}
