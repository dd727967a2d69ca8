"""The web UI (tuneforge webui), a thin client over the CLI and run directories: pages (app, *_page, ui) over a
Workspace (folders: sandbox; commands: jobs), the Train form (fields, form, train_actions), i18n and schema_zh."""
