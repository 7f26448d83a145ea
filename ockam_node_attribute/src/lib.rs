//! Attribute macros of the ockam-rs stack, used through the `ockam` facade
//! (`#[ockam::node]`) or the node crate alone (`#[ockam_node::node]`).
//!
//! ```rust
//! use ockam_core::Result;
//! use ockam_node::Context;
//!
//! #[ockam_node::node]
//! async fn main(ctx: Context) -> Result<()> {
//!     info!("node up at {}", ctx.address()); // tracing's macros are in scope
//!     ctx.stop().await
//! }
//! ```
//!
//! The expansion names the crate it needs by the name the user's
//! `Cargo.toml` gives it (found with `proc-macro-crate`): the node crate
//! (package `ockam-rs-node`, library `ockam_node`) if the user depends on
//! it, else the facade (package `ockam-rs`, library `ockam`), also when
//! either is renamed (`my_ockam = { package = "ockam-rs", .. }`). Both export
//! the same hidden items the expansion uses (`__node_prelude`, `__private`,
//! `setup_tracing`, `start_node`). One spelling cannot be told apart: a
//! dependency keyed `ockam_rs` with `package = "ockam-rs"` is taken for the
//! unrenamed facade; name it anything else.
//!
//! - `#[ockam::node]` turns `async fn main(ctx: Context) -> Result<()>` into a
//!   program that starts a node, runs the body on it and exits when the node
//!   stops.
//! - `#[ockam::worker]` (and its older spelling `#[async_worker]`) goes on an
//!   `impl Worker for T` block so its `async fn`s can implement the trait.

use proc_macro::TokenStream;
use proc_macro2::{Ident, Span, TokenStream as TokenStream2};
use proc_macro_crate::FoundCrate;
use quote::{quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{parse_macro_input, FnArg, Item, ItemFn, Pat, ReturnType};

const NODE_SHAPE: &str = "expected `async fn main(ctx: Context) -> Result<()>`";

/// A crate the expansion can use: its package name and its library name.
struct Runtime {
    package: &'static str,
    library: &'static str,
}

/// Searched in this order: the node crate first (the facade re-exports
/// it, so a user of both gets paths that work either way), then the facade.
/// proc-macro-crate also reads dev-dependencies, so a crate whose library
/// uses the node crate and whose tests use the facade still gets paths its
/// library can reach.
const RUNTIMES: [Runtime; 2] = [
    Runtime {
        package: "ockam-rs-node",
        library: "ockam_node",
    },
    Runtime {
        package: "ockam-rs",
        library: "ockam",
    },
];

/// The path (`::ockam`, `::ockam_node`, `::my_ockam`, ...) under which the
/// crate being compiled reaches the items the expansion uses. Falls back to
/// `::ockam` when the manifest names neither crate (the compiler then says
/// that `ockam` is missing).
fn runtime_path() -> TokenStream2 {
    for runtime in &RUNTIMES {
        let name = match proc_macro_crate::crate_name(runtime.package) {
            // The crate itself (its examples, doc tests; its own library
            // through `extern crate self as <library>`): its library name.
            Ok(FoundCrate::Itself) => runtime.library.to_string(),
            // proc-macro-crate spells an unrenamed dependency by its
            // package name (`ockam_rs`); the compiler calls it by its
            // library name.
            Ok(FoundCrate::Name(name)) if name == runtime.package.replace('-', "_") => {
                runtime.library.to_string()
            }
            Ok(FoundCrate::Name(name)) => name,
            Err(_) => continue,
        };
        let ident = Ident::new(&name, Span::call_site());
        return quote!(::#ident);
    }
    quote!(::ockam)
}

fn error(span: Span, message: &str) -> TokenStream {
    syn::Error::new(span, message).to_compile_error().into()
}

/// Runs an `async fn main(ctx: Context) -> Result<()>` on a new node.
///
/// The body gets the node's `app` context. Returning `Ok(())` without calling
/// `ctx.stop()` keeps the node (and the process) running; `ctx.stop().await`
/// shuts the node down. A `tracing` subscriber is installed (INFO, or
/// `RUST_LOG`) unless one is set, and `route!` is in scope.
#[proc_macro_attribute]
pub fn node(args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return error(
            TokenStream2::from(args).span(),
            "#[ockam::node] takes no arguments",
        );
    }
    let input = parse_macro_input!(item as Item);
    let func = match input {
        Item::Fn(f) => f,
        other => {
            return error(
                other.span(),
                &format!("#[ockam::node] goes on a function: {NODE_SHAPE}"),
            )
        }
    };
    let name = func.sig.ident.clone();
    match expand_node(func) {
        Ok(ts) => ts.into(),
        Err(e) => {
            // Keep a function of that name so the only error is ours (no
            // follow-up "`main` function not found").
            let e = e.to_compile_error();
            quote!(#e fn #name() {}).into()
        }
    }
}

fn expand_node(func: ItemFn) -> syn::Result<TokenStream2> {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
        ..
    } = func;
    if sig.asyncness.is_none() {
        return Err(syn::Error::new(
            sig.fn_token.span(),
            format!("#[ockam::node] needs an `async fn`: {NODE_SHAPE}"),
        ));
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        return Err(syn::Error::new(
            sig.generics.span(),
            format!("#[ockam::node] functions cannot be generic: {NODE_SHAPE}"),
        ));
    }
    if sig.inputs.len() != 1 {
        return Err(syn::Error::new(
            if sig.inputs.is_empty() {
                sig.ident.span()
            } else {
                sig.inputs.span()
            },
            format!(
                "#[ockam::node] functions take exactly one argument, the node's Context: {NODE_SHAPE}"
            ),
        ));
    }
    let arg = match &sig.inputs[0] {
        FnArg::Typed(pt) => match &*pt.pat {
            Pat::Ident(_) => pt.clone(),
            other => {
                return Err(syn::Error::new(
                    other.span(),
                    format!("name the Context argument with a plain identifier: {NODE_SHAPE}"),
                ))
            }
        },
        FnArg::Receiver(r) => {
            return Err(syn::Error::new(
                r.span(),
                format!("#[ockam::node] functions cannot take `self`: {NODE_SHAPE}"),
            ))
        }
    };
    let ret = match &sig.output {
        ReturnType::Type(_, ty) => ty.clone(),
        ReturnType::Default => {
            return Err(syn::Error::new(
                sig.ident.span(),
                format!("#[ockam::node] functions must return `Result<()>`: {NODE_SHAPE}"),
            ))
        }
    };
    let name = &sig.ident;
    // A wrong argument type is reported on that type.
    let arg_span = arg.ty.span();
    let execute = quote_spanned! {arg_span=>
        __ockam_executor.execute(__ockam_node_main(__ockam_ctx))
    };
    let root = runtime_path();
    Ok(quote! {
        // A glob import, so that a `use ockam::route;` of the user's own
        // takes precedence instead of clashing (and stays used).
        #[allow(unused_imports)]
        use #root::__node_prelude::*;

        #(#attrs)*
        #vis fn #name() -> #ret {
            async fn __ockam_node_main(#arg) -> #ret #block

            #root::setup_tracing();
            let (__ockam_ctx, mut __ockam_executor) = #root::start_node();
            #execute
        }
    })
}

fn worker_attribute(name: &str, args: TokenStream, item: TokenStream) -> TokenStream {
    if !args.is_empty() {
        return error(
            TokenStream2::from(args).span(),
            &format!("#[{name}] takes no arguments"),
        );
    }
    let input = parse_macro_input!(item as Item);
    match input {
        Item::Impl(imp) if imp.trait_.is_some() => {
            let root = runtime_path();
            quote! {
            #[#root::__private::async_trait]
            #imp
            }
            .into()
        }
        other => error(
            other.span(),
            &format!("#[{name}] goes on an `impl Worker for YourType {{ .. }}` block"),
        ),
    }
}

/// Lets an `impl Worker for T` block use `async fn` for the trait's methods.
#[proc_macro_attribute]
pub fn worker(args: TokenStream, item: TokenStream) -> TokenStream {
    worker_attribute("ockam::worker", args, item)
}

/// The older spelling of `#[ockam::worker]`.
#[proc_macro_attribute]
pub fn async_worker(args: TokenStream, item: TokenStream) -> TokenStream {
    worker_attribute("async_worker", args, item)
}

// The README's examples run as doc tests too, so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
