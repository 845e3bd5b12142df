//! The web UI's TypeScript, generated from the Rust side: every type a command or an event
//! carries (through `ts-rs`), the `Commands` and `Events` tables and their name lists. The
//! output is committed as `ui/src/generated/ipc.ts`, so that the UI builds without Rust; a test
//! (`desktop/tests/typescript.rs`) fails while the file differs from what [`generate`] writes.

use std::any::TypeId;
use std::collections::{BTreeMap, HashSet};

use ts_rs::{Config, TS, TypeVisitor};

use super::IpcError;

/// Where the generated file lives, relative to the repository's root.
pub const GENERATED_PATH: &str = "ui/src/generated/ipc.ts";

/// The generated `ui/src/generated/ipc.ts`, with the events `describe_events` describes
/// ([`crate::typescript`] passes the event declaration's, which itself builds on this module).
pub fn generate(describe_events: fn(&mut Generator)) -> String {
    let mut ts = Generator::new();
    // Not named by any command, but what every rejected command carries.
    ts.type_name::<IpcError>();
    super::describe_commands(&mut ts);
    describe_events(&mut ts);
    ts.finish()
}

/// One named field of an argument object: its name, docs and TypeScript type.
pub struct Field {
    name: &'static str,
    docs: &'static [&'static str],
    ty: String,
}

/// Collects the declarations of the types it is shown and the entries of the `Commands` and
/// `Events` tables.
pub struct Generator {
    config: Config,
    seen: HashSet<TypeId>,
    /// Declarations by TypeScript name, so that the file's order does not depend on the order
    /// the types were met in.
    declarations: BTreeMap<String, String>,
    commands: Vec<String>,
    command_names: Vec<&'static str>,
    events: Vec<String>,
    event_names: Vec<&'static str>,
}

impl Generator {
    fn new() -> Self {
        Self {
            // u64 counters (bytes, connections) stay far below 2^53: plain numbers, as JSON.parse
            // gives them.
            config: Config::new().with_large_int("number"),
            seen: HashSet::new(),
            declarations: BTreeMap::new(),
            commands: Vec::new(),
            command_names: Vec::new(),
            events: Vec::new(),
            event_names: Vec::new(),
        }
    }

    /// The TypeScript for `T` as a field or reply names it; declares `T` and every type it
    /// refers to.
    pub fn type_name<T: TS + 'static + ?Sized>(&mut self) -> String {
        self.visit::<T>();
        T::name(&self.config)
    }

    /// A named argument of type `T`.
    pub fn field<T: TS + 'static + ?Sized>(
        &mut self,
        name: &'static str,
        docs: &'static [&'static str],
    ) -> Field {
        Field {
            name,
            docs,
            ty: self.type_name::<T>(),
        }
    }

    /// A command: `name: [arguments, reply]` in `Commands`.
    pub fn command(
        &mut self,
        name: &'static str,
        docs: &[&str],
        arguments: Vec<Field>,
        reply: String,
    ) {
        let arguments = if arguments.is_empty() {
            "Record<string, never>".to_string()
        } else {
            let fields: Vec<String> = arguments
                .iter()
                .map(|f| format!("{}{}: {}", inline_docs(f.docs), f.name, f.ty))
                .collect();
            format!("{{ {} }}", fields.join("; "))
        };
        self.commands.push(format!(
            "{}  {name}: [{arguments}, {reply}];\n",
            docs_block(docs, "  ")
        ));
        self.command_names.push(name);
    }

    /// An event: `name: payload` in `Events`; `None`, an event without a payload, is `{}`.
    pub fn event(&mut self, name: &'static str, docs: &[&str], payload: Option<String>) {
        let payload = payload.unwrap_or_else(|| "Record<string, never>".to_string());
        self.events
            .push(format!("{}  {name}: {payload};\n", docs_block(docs, "  ")));
        self.event_names.push(name);
    }

    fn finish(self) -> String {
        let mut out = String::from(HEADER);
        for declaration in self.declarations.values() {
            out.push('\n');
            out.push_str(declaration);
            out.push('\n');
        }
        out.push_str(
            "\n/** Command name → [arguments, reply]. Arguments are passed to `invoke` as named \
             fields; a rejected command carries an `IpcError`. */\nexport interface Commands {\n",
        );
        self.commands.iter().for_each(|c| out.push_str(c));
        out.push_str("}\n\nexport type CommandName = keyof Commands;\n\n");
        out.push_str(&name_list(
            "COMMAND_NAMES",
            "CommandName",
            &self.command_names,
        ));
        out.push_str("\n/** Event name → payload. */\nexport interface Events {\n");
        self.events.iter().for_each(|e| out.push_str(e));
        out.push_str("}\n\nexport type EventName = keyof Events;\n\n");
        out.push_str(&name_list("EVENT_NAMES", "EventName", &self.event_names));
        out
    }

    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        if !self.seen.insert(TypeId::of::<T>()) {
            return;
        }
        // Only types with a declaration of their own (derived ones) have an output path;
        // `Vec`, `Option`, strings and numbers are written inline.
        if T::output_path().is_some() {
            let name = T::ident(&self.config);
            let declaration = layout(&format!(
                "{}export {}",
                T::docs().unwrap_or_default(),
                T::decl(&self.config)
            ));
            if let Some(other) = self.declarations.insert(name.clone(), declaration) {
                // Two Rust types of one name would shadow each other in TypeScript.
                panic!("two types are named {name} in TypeScript:\n{other}");
            }
        }
        T::visit_dependencies(self);
        T::visit_generics(self);
    }
}

impl TypeVisitor for Generator {
    fn visit<T: TS + 'static + ?Sized>(&mut self) {
        Generator::visit::<T>(self);
    }
}

const HEADER: &str = "\
// Generated from the Rust side by `k8s_tunnels_desktop::ipc::typescript` (the commands declared in
// desktop/src/ipc/commands.rs, the events in desktop/src/events.rs, the types they carry): do not
// edit. Regenerate with `UPDATE_TS=1 cargo nextest run -p k8s-tunnels-desktop --test typescript`;
// that test fails while this file differs from what Rust generates.
";

/// ts-rs writes a declaration's fields flush left, each followed by a space: indents the body
/// (every line after the one that starts the type) and drops trailing blanks. Rustdoc links in
/// the docs (``[`Shell`]``) become plain code: they lead nowhere in TypeScript.
fn layout(declaration: &str) -> String {
    let mut out = String::new();
    let mut body = false;
    for line in declaration.lines() {
        let line = line.trim_end();
        if body {
            out.push_str("  ");
        }
        body |= line.starts_with("export type ");
        if line.starts_with(" *") || line.starts_with("/**") {
            out.push_str(&line.replace("[`", "`").replace("`]", "`"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.truncate(out.trim_end().len());
    out
}

fn docs_block(docs: &[&str], indent: &str) -> String {
    match docs {
        [] => String::new(),
        [one] => format!("{indent}/**{one} */\n"),
        lines => {
            let mut out = format!("{indent}/**\n");
            for line in lines {
                out.push_str(&format!("{indent} *{line}\n"));
            }
            out.push_str(&format!("{indent} */\n"));
            out
        }
    }
}

fn inline_docs(docs: &[&str]) -> String {
    if docs.is_empty() {
        String::new()
    } else {
        format!("/**{} */ ", docs.join(""))
    }
}

fn name_list(constant: &str, ty: &str, names: &[&str]) -> String {
    let mut out = format!("export const {constant}: readonly {ty}[] = [\n");
    for name in names {
        out.push_str(&format!("  \"{name}\",\n"));
    }
    out.push_str("] as const;\n");
    out
}
