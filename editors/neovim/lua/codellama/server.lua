-- Starting the language server (one client per project root) and talking to it across Neovim
-- versions (0.10 uses `client.request(...)`, 0.11+ `client:request(...)`).
local M = {}

M.name = 'codellama'

--- Latest `codellama/status` notification per client id (lsp_server/README.md).
---@type table<integer, table>
M.status = {}

local has_011 = vim.fn.has('nvim-0.11') == 1

-- Client methods ------------------------------------------------------------------------------------

---@return boolean ok, integer? request_id
function M.request(client, method, params, handler, bufnr)
  if has_011 then
    return client:request(method, params, handler, bufnr)
  end
  return client.request(method, params, handler, bufnr)
end

function M.request_sync(client, method, params, timeout_ms, bufnr)
  if has_011 then
    return client:request_sync(method, params, timeout_ms, bufnr)
  end
  return client.request_sync(method, params, timeout_ms, bufnr)
end

function M.notify(client, method, params)
  if has_011 then
    return client:notify(method, params)
  end
  return client.notify(method, params)
end

function M.cancel(client, request_id)
  if has_011 then
    return client:cancel_request(request_id)
  end
  return client.cancel_request(request_id)
end

---@return vim.lsp.Client[]
function M.clients(bufnr)
  return vim.lsp.get_clients({ name = M.name, bufnr = bufnr })
end

-- Finding the server ----------------------------------------------------------------------------------

--- This plugin's directory: `<repo>/editors/neovim` when used from the repository.
local function plugin_root()
  local source = debug.getinfo(1, 'S').source:gsub('^@', '')
  return vim.fn.fnamemodify(source, ':p:h:h:h')
end

local function venv_python(dir)
  if vim.fn.has('win32') == 1 then
    return vim.fs.joinpath(dir, '.venv', 'Scripts', 'python.exe')
  end
  return vim.fs.joinpath(dir, '.venv', 'bin', 'python')
end

local import_cache = {}

--- Can this Python import the server? (Cached; spawns the interpreter once.)
---@param python string
---@return boolean
function M.has_server(python)
  if import_cache[python] == nil then
    local ok, result = pcall(function()
      return vim.system({ python, '-c', 'import lsp_server' }, { text = true }):wait(15000)
    end)
    import_cache[python] = ok and result.code == 0
  end
  return import_cache[python]
end

--- The interpreter for the server and where it was found: the `python` option; the project's `.venv`
--- if it has the server installed; the `.venv` of the repository this plugin lives in; python3.
---@param opts codellama.Options
---@param root? string
---@return string python, string source
function M.resolve_python(opts, root)
  if opts.python then
    return vim.fn.expand(opts.python), 'python option'
  end
  if root then
    local candidate = venv_python(root)
    if vim.fn.executable(candidate) == 1 and M.has_server(candidate) then
      return candidate, 'project .venv'
    end
  end
  local repo = vim.fn.fnamemodify(plugin_root(), ':h:h')
  local candidate = venv_python(repo)
  if vim.fn.executable(candidate) == 1 and vim.uv.fs_stat(vim.fs.joinpath(repo, 'lsp_server')) then
    return candidate, 'repository .venv'
  end
  return (vim.fn.exepath('python3') ~= '' and vim.fn.exepath('python3') or 'python3'), 'PATH'
end

---@param opts codellama.Options
---@param root? string
---@return string[] cmd, string source
function M.resolve_cmd(opts, root)
  if opts.cmd then
    return opts.cmd, 'cmd option'
  end
  local python, source = M.resolve_python(opts, root)
  return { python, '-m', 'lsp_server' }, source
end

--- The project root of a buffer: the nearest directory with a root marker, else the working directory.
---@param bufnr integer
---@param markers string[]
---@return string
function M.root_dir(bufnr, markers)
  local root = vim.fs.root(bufnr, markers)
  return root or vim.fn.getcwd()
end

-- Starting --------------------------------------------------------------------------------------------

local function capabilities()
  local caps = vim.lsp.protocol.make_client_capabilities()
  caps.textDocument = caps.textDocument or {}
  -- Neovim < 0.12 does not announce inline completion; the plugin implements it (virtual_text mode).
  caps.textDocument.inlineCompletion = caps.textDocument.inlineCompletion or { dynamicRegistration = false }
  return caps
end

--- Called with a client id when its server's model becomes ready (set by init.lua).
---@type fun(client_id: integer)?
M.on_ready = nil

local function on_status(_, params, ctx)
  if type(params) == 'table' then
    local previous = M.status[ctx.client_id] or {}
    M.status[ctx.client_id] = vim.tbl_extend('force', previous, params)
    vim.api.nvim_exec_autocmds('User', { pattern = 'CodellamaStatus', modeline = false })
    if previous.state ~= 'ready' and params.state == 'ready' and M.on_ready then
      M.on_ready(ctx.client_id)
    end
  end
end

--- Is the client's model loaded (its last status says "ready")?
---@param client_id integer
---@return boolean
function M.ready(client_id)
  local s = M.status[client_id]
  return s ~= nil and s.state == 'ready'
end

--- Starts (or reuses) the client for the buffer's root and attaches the buffer.
---@param bufnr integer
---@param opts codellama.Options
---@param on_attach fun(client: vim.lsp.Client, bufnr: integer)
---@return integer? client_id
function M.start(bufnr, opts, on_attach)
  local root = M.root_dir(bufnr, opts.root_markers)
  local cmd = M.resolve_cmd(opts, root)
  local settings = { codellama = opts.init_options }
  return vim.lsp.start({
    name = M.name,
    cmd = cmd,
    root_dir = root,
    workspace_folders = { { uri = vim.uri_from_fname(root), name = root } },
    capabilities = capabilities(),
    init_options = settings,
    settings = settings, -- answers the server's workspace/configuration pull
    handlers = { ['codellama/status'] = on_status },
    on_attach = on_attach,
    on_exit = function(code, signal, client_id)
      M.status[client_id] = nil
      if code ~= 0 and signal ~= 15 then
        vim.schedule(function()
          vim.notify(
            ('codellama: the language server exited with code %d (signal %d). `%s`; see :checkhealth codellama and :LspLog.'):format(
              code,
              signal,
              type(cmd) == 'table' and table.concat(cmd, ' ') or 'cmd'
            ),
            vim.log.levels.ERROR
          )
        end)
      end
    end,
  }, { bufnr = bufnr })
end

--- Runs a server command (an LSP `Command`) for the buffer, ignoring the answer.
---@param bufnr integer
---@param command { command: string, arguments?: any[] }
---@param client_id? integer default: the buffer's codellama client
function M.execute(bufnr, command, client_id)
  local client = client_id and vim.lsp.get_client_by_id(client_id) or M.clients(bufnr)[1]
  if client then
    local params = { command = command.command, arguments = command.arguments }
    pcall(M.request, client, 'workspace/executeCommand', params, function() end, bufnr)
  end
end

--- Tells the server what became of its suggestion ("word", "line", "dismissed"), for the session's
--- acceptance statistics (kept by the server, shown by :CodellamaStatus, sent nowhere else).
---@param bufnr integer
---@param event string
function M.suggestion_event(bufnr, event)
  M.execute(bufnr, { command = 'codellama.suggestionEvent', arguments = { { event = event } } })
end

--- Sends new settings to every running client (and keeps them for clients started later).
---@param opts codellama.Options
function M.push_settings(opts)
  for _, client in ipairs(M.clients()) do
    client.settings = { codellama = opts.init_options }
    M.notify(client, 'workspace/didChangeConfiguration', { settings = { codellama = opts.init_options } })
  end
end

return M
