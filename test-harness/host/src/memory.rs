//! Reading and writing the module's linear memory from hostcalls, and handing it host-owned
//! bytes through its own allocator, as the SDK expects (it frees them with `Vec::from_raw_parts`).

use wasmtime::{Caller, Extern, Memory, Result, format_err};

use crate::abi::Status;
use crate::state::VmState;

fn memory(caller: &mut Caller<'_, VmState>) -> Result<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Ok(memory),
        _ => Err(format_err!("module exports no `memory`")),
    }
}

/// Copies `len` bytes at `ptr` out of the module; `None` when out of bounds.
pub(crate) fn read(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    len: i32,
) -> Result<Option<Vec<u8>>> {
    let memory = memory(caller)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = memory.data(&*caller);
    Ok(ptr
        .checked_add(len)
        .and_then(|end| data.get(ptr..end))
        .map(<[u8]>::to_vec))
}

/// Reads a string argument lossily: names and keys from the SDK are UTF-8 `&str`s.
pub(crate) fn read_string(
    caller: &mut Caller<'_, VmState>,
    ptr: i32,
    len: i32,
) -> Result<Option<String>> {
    Ok(read(caller, ptr, len)?.map(|bytes| String::from_utf8_lossy(&bytes).into_owned()))
}

/// Writes bytes at `ptr`; false when out of bounds.
pub(crate) fn write(caller: &mut Caller<'_, VmState>, ptr: i32, bytes: &[u8]) -> Result<bool> {
    let memory = memory(caller)?;
    let ptr = ptr as u32 as usize;
    let data = memory.data_mut(&mut *caller);
    match ptr
        .checked_add(bytes.len())
        .and_then(|end| data.get_mut(ptr..end))
    {
        Some(slot) => {
            slot.copy_from_slice(bytes);
            Ok(true)
        }
        None => Ok(false),
    }
}

pub(crate) fn write_u32(caller: &mut Caller<'_, VmState>, ptr: i32, value: u32) -> Result<bool> {
    write(caller, ptr, &value.to_le_bytes())
}

pub(crate) fn write_u64(caller: &mut Caller<'_, VmState>, ptr: i32, value: u64) -> Result<bool> {
    write(caller, ptr, &value.to_le_bytes())
}

/// Allocates `size` bytes inside the module with its exported allocator.
fn allocate(caller: &mut Caller<'_, VmState>, size: usize) -> Result<i32> {
    let func = caller
        .get_export("proxy_on_memory_allocate")
        .or_else(|| caller.get_export("malloc"))
        .and_then(Extern::into_func)
        .ok_or_else(|| {
            format_err!("module exports neither `proxy_on_memory_allocate` nor `malloc`")
        })?;
    let typed = func.typed::<i32, i32>(&*caller)?;
    let size =
        i32::try_from(size).map_err(|_| format_err!("allocation of {size} bytes is too large"))?;
    let ptr = typed.call(&mut *caller, size)?;
    if ptr == 0 {
        return Err(format_err!(
            "module allocator returned null for {size} bytes"
        ));
    }
    Ok(ptr)
}

/// Hands `data` to the module: allocates, copies, and writes the pointer and size to the
/// two out-parameters. Empty data is returned as a null pointer and zero size, as Envoy does.
pub(crate) fn copy_out(
    caller: &mut Caller<'_, VmState>,
    data: &[u8],
    ptr_ptr: i32,
    size_ptr: i32,
) -> Result<Status> {
    let ptr = if data.is_empty() {
        0
    } else {
        let ptr = allocate(caller, data.len())?;
        if !write(caller, ptr, data)? {
            return Ok(Status::InvalidMemoryAccess);
        }
        ptr
    };
    if !write_u32(caller, ptr_ptr, ptr as u32)? || !write_u32(caller, size_ptr, data.len() as u32)?
    {
        return Ok(Status::InvalidMemoryAccess);
    }
    Ok(Status::Ok)
}
