-- codellama.nvim: Neovim client for the codellama-local language server (`python -m lsp_server`).
--
--   require("codellama").setup({ cmd = {...}, init_options = {...}, filetypes = {...}, keymaps = {...} })
--
-- Ghost text comes from vim.lsp.inline_completion on Neovim 0.12 and from the plugin's own extmark
-- renderer on 0.10/0.11. Completion menus (vim.lsp.completion, nvim-cmp) and code actions
-- (vim.lsp.buf.code_action) use the server's standard LSP methods. See :help codellama.
local config = require('codellama.config')
local server = require('codellama.server')

local api = vim.api
local M = {}

---@type "builtin"|"virtual_text"|false
M.mode = false
local did_setup = false
---@type table<integer, boolean>
local attached = {}

local function ghost()
  if M.mode == 'builtin' then
    return require('codellama.builtin')
  elseif M.mode == 'virtual_text' then
    return require('codellama.ghost')
  end
  return nil
end

local function resolve_buf(bufnr)
  return (bufnr == nil or bufnr == 0) and api.nvim_get_current_buf() or bufnr
end

-- Public API ------------------------------------------------------------------------------------------

--- The suggestion shown in the buffer (the text `accept()` would insert at the cursor), or nil.
---@param bufnr? integer default: current buffer
---@return string?
function M.suggestion(bufnr)
  local g = ghost()
  return g and g.suggestion(resolve_buf(bufnr)) or nil
end

--- Inserts the shown suggestion. Returns false when there is none.
--- (With Neovim 0.12's inline completion, the text is inserted on the next event-loop tick.)
---@param bufnr? integer
---@return boolean
function M.accept(bufnr)
  local g = ghost()
  return g ~= nil and g.accept(resolve_buf(bufnr)) or false
end

--- Accepts part of the suggestion and tells the server (acceptance statistics).
local function accept_part(bufnr, part)
  local g = ghost()
  bufnr = resolve_buf(bufnr)
  local accepted = g ~= nil and g.accept(bufnr, part) or false
  if accepted then
    server.suggestion_event(bufnr, part)
  end
  return accepted
end

--- Inserts the next word of the suggestion; the rest stays.
function M.accept_word(bufnr)
  return accept_part(bufnr, 'word')
end

--- Inserts the next line of the suggestion; the rest stays.
function M.accept_line(bufnr)
  return accept_part(bufnr, 'line')
end

--- Hides the suggestion until the next keystroke.
function M.dismiss(bufnr)
  local g = ghost()
  bufnr = resolve_buf(bufnr)
  if g then
    local shown = g.suggestion(bufnr) ~= nil
    g.dismiss(bufnr)
    if shown then
      server.suggestion_event(bufnr, 'dismissed')
    end
  end
end

function M.next(bufnr)
  local g = ghost()
  if g then
    g.cycle(resolve_buf(bufnr), 1)
  end
end

function M.prev(bufnr)
  local g = ghost()
  if g then
    g.cycle(resolve_buf(bufnr), -1)
  end
end

--- Asks for a suggestion at the cursor now.
function M.trigger(bufnr)
  local g = ghost()
  if g then
    g.trigger(resolve_buf(bufnr))
  end
end

--- Is a suggestion visible in the buffer?
function M.visible(bufnr)
  return M.suggestion(bufnr) ~= nil
end

--- Short status for a statusline: model, device and the last latency, e.g. "CodeLlama-7b cpu 143ms".
---@param bufnr? integer
---@return string
function M.status(bufnr)
  local client = server.clients(resolve_buf(bufnr))[1]
  local s = client and server.status[client.id]
  if not s then
    return client and 'codellama: starting' or ''
  end
  if s.state == 'error' then
    return 'codellama: error'
  elseif s.state == 'loading' or s.state == 'starting' then
    return 'codellama: loading ' .. (s.model or '')
  elseif s.state == 'disabled' then
    return 'codellama: off'
  end
  local parts = { s.model or 'codellama' }
  if s.device and s.device ~= vim.NIL then
    table.insert(parts, s.device)
  end
  if type(s.lastLatencyMs) == 'number' then
    table.insert(parts, ('%dms'):format(math.floor(s.lastLatencyMs + 0.5)))
  end
  if s.indexing then
    table.insert(parts, 'indexing')
  end
  return table.concat(parts, ' ')
end

--- This session's acceptance statistics, kept by the server (never sent anywhere), e.g.
--- "suggestions: 12 shown, 5 accepted (3 whole, 1 word, 1 line), 4 dismissed, 2 typed through".
---@param bufnr? integer
---@return string?
function M.statistics(bufnr)
  local client = server.clients(resolve_buf(bufnr))[1]
  local a = client and server.status[client.id] and server.status[client.id].acceptance
  if type(a) ~= 'table' then
    return nil
  end
  local whole, word, line = a.accepted or 0, a.acceptedWord or 0, a.acceptedLine or 0
  return ('suggestions: %d shown, %d accepted (%d whole, %d word, %d line), %d dismissed, %d typed through'):format(
    a.shown or 0, whole + word + line, whole, word, line, a.dismissed or 0, a.typedThrough or 0)
end

--- Changes server settings at run time (camelCase keys as in lsp_server/README.md), e.g.
--- `require("codellama").set_settings({ maxNewTokens = 32 })`.
---@param settings table
function M.set_settings(settings)
  config.options.init_options = vim.tbl_deep_extend('force', config.options.init_options or {}, settings)
  server.push_settings(config.options)
end

--- Turns suggestions on or off in every client (the server's `enable` setting).
---@param enable? boolean default: toggle
function M.enable(enable)
  if enable == nil then
    enable = (config.options.init_options or {}).enable == false
  end
  M.set_settings({ enable = enable })
  if not enable then
    for bufnr in pairs(attached) do
      M.dismiss(bufnr)
    end
  end
  vim.notify('codellama: suggestions ' .. (enable and 'on' or 'off'))
end

-- Adapting the model to the project ---------------------------------------------------------------------
-- The server trains in a child process (completions go on), reports LSP progress (vim.lsp.status(),
-- the LspProgress event, and fidget.nvim or similar), and at the end shows its before/after report and
-- asks whether to use the adapter (window/showMessageRequest). See :help codellama-adapter.

local function run_server_command(command, arguments, on_result)
  local client = server.clients(api.nvim_get_current_buf())[1] or server.clients()[1]
  if not client then
    vim.notify('codellama: the language server is not running for this buffer', vim.log.levels.WARN)
    return false
  end
  server.request(client, 'workspace/executeCommand', { command = command, arguments = arguments }, function(err, result)
    if err then
      vim.notify('codellama: ' .. tostring(err.message), vim.log.levels.WARN)
    elseif on_result and type(result) == 'table' then
      on_result(result, client)
    end
  end)
  return true
end

--- Trains an adapter on the buffer's project (the server's workspace folder). Progress shows as LSP
--- progress; the server asks at the end whether to use the adapter. Training again after a cancel (or
--- after Neovim was closed) resumes from the last checkpoint.
---@param opts? { steps?: integer } steps: the training budget (default: about 10 minutes on two cores)
function M.train(opts)
  opts = opts or {}
  local arg = vim.empty_dict() -- an object even without keys ({} would be sent as [])
  if opts.steps then
    arg.steps = opts.steps
  end
  return run_server_command('codellama.adapter.train', { arg }, function(result)
    if result.started then
      vim.notify('codellama: training an adapter on ' .. vim.fn.fnamemodify(result.workspace, ':t')
        .. (result.resumed and ' (resuming from the last checkpoint)' or ''))
    end -- otherwise the server has said why (window/showMessage)
  end)
end

--- Stops the training (its checkpoint is kept: :CodellamaTrain resumes it).
function M.cancel_training()
  return run_server_command('codellama.adapter.cancelTraining', {})
end

--- Stops using the adapter trained on this project; the model is reloaded without it.
function M.drop_adapter()
  return run_server_command('codellama.adapter.drop', {})
end

--- The adapter in use, e.g. "adapter: trained on this project (exact match 4.1 % -> 8.3 %)", or nil.
---@param bufnr? integer
---@return string?
function M.adapter(bufnr)
  local client = server.clients(resolve_buf(bufnr))[1]
  local a = client and server.status[client.id] and server.status[client.id].adapter
  if type(a) ~= 'table' or type(a.path) ~= 'string' then
    return nil
  end
  if a.source == 'setting' then
    return 'adapter: ' .. a.path .. ' (the adapter setting)'
  elseif a.applied == false then
    return 'adapter trained on this project: not applied (trained for another model)'
  end
  local gain = ''
  if type(a.exactMatchBefore) == 'number' and type(a.exactMatchAfter) == 'number' then
    gain = (' (exact match %.1f %% -> %.1f %%)'):format(a.exactMatchBefore, a.exactMatchAfter)
  end
  return 'adapter: trained on this project' .. gain
end

-- Attaching -------------------------------------------------------------------------------------------

local function wants(bufnr)
  local opts = config.options
  if not api.nvim_buf_is_valid(bufnr) or vim.bo[bufnr].buftype ~= '' then
    return false
  end
  local ft = vim.bo[bufnr].filetype
  if opts.filetypes then
    return vim.tbl_contains(opts.filetypes, ft)
  end
  return ft ~= '' and not vim.tbl_contains(opts.exclude_filetypes, ft)
end

local function on_attach(client, bufnr)
  attached[bufnr] = true
  local g = ghost()
  if g then
    g.attach(bufnr, config.options)
  end
  if config.options.builtin_completion and vim.lsp.completion and vim.lsp.completion.enable then
    vim.lsp.completion.enable(true, client.id, bufnr, { autotrigger = false })
  end
  if config.options.on_attach then
    config.options.on_attach(client, bufnr)
  end
end

--- Starts (or reuses) the server for a buffer. Called from the FileType autocommand.
---@param bufnr? integer
---@return integer? client_id
function M.attach(bufnr)
  bufnr = resolve_buf(bufnr)
  if not wants(bufnr) then
    return nil
  end
  return server.start(bufnr, config.options, on_attach)
end

--- Stops every codellama client and starts them again for the attached buffers.
function M.restart()
  local buffers = vim.tbl_keys(attached)
  for _, client in ipairs(server.clients()) do
    if vim.fn.has('nvim-0.11') == 1 then
      client:stop(true)
    else
      client.stop(true)
    end
  end
  attached = {}
  vim.defer_fn(function()
    for _, bufnr in ipairs(buffers) do
      if api.nvim_buf_is_valid(bufnr) then
        M.attach(bufnr)
      end
    end
  end, 200)
end

-- Keymaps ---------------------------------------------------------------------------------------------

--- Maps `lhs` in Insert mode to `action` when a suggestion is visible, and to what `lhs` did before
--- (another mapping, or the key itself) when not.
local function map_with_fallback(lhs, action, desc)
  local previous = vim.fn.maparg(lhs, 'i', false, true)
  local function fallback()
    if previous and previous.callback then
      local keys = previous.callback()
      if previous.expr == 1 and type(keys) == 'string' and keys ~= '' then
        api.nvim_feedkeys(previous.replace_keycodes == 1 and vim.keycode(keys) or keys, 'n', false)
      end
    elseif previous and previous.rhs and previous.rhs ~= '' then
      local keys = previous.expr == 1 and api.nvim_eval(previous.rhs) or previous.rhs
      api.nvim_feedkeys(vim.keycode(keys), previous.noremap == 1 and 'n' or 'm', false)
    else
      api.nvim_feedkeys(vim.keycode(lhs), 'n', false)
    end
  end
  vim.keymap.set('i', lhs, function()
    if not M.visible() or not action() then
      fallback()
    end
  end, { desc = desc, silent = true })
end

local function set_keymaps(keymaps)
  if not keymaps then
    return
  end
  local function plain(lhs, fn, desc)
    if lhs then
      vim.keymap.set('i', lhs, fn, { desc = desc, silent = true })
    end
  end
  if keymaps.accept then
    map_with_fallback(keymaps.accept, function()
      return M.accept()
    end, 'codellama: accept suggestion')
  end
  if keymaps.accept_word then
    map_with_fallback(keymaps.accept_word, function()
      return M.accept_word()
    end, 'codellama: accept the next word')
  end
  if keymaps.accept_line then
    map_with_fallback(keymaps.accept_line, function()
      return M.accept_line()
    end, 'codellama: accept the next line')
  end
  plain(keymaps.dismiss, function()
    M.dismiss()
  end, 'codellama: dismiss suggestion')
  plain(keymaps.next, function()
    M.next()
  end, 'codellama: next suggestion')
  plain(keymaps.prev, function()
    M.prev()
  end, 'codellama: previous suggestion')
  plain(keymaps.trigger, function()
    M.trigger()
  end, 'codellama: suggest now')
end

-- Setup -----------------------------------------------------------------------------------------------

--- The server's code actions all run `codellama.runAction`; "Ask" needs the user's question first, which
--- only the editor can ask for. Everything else goes to the server unchanged.
local function register_action_command()
  vim.lsp.commands['codellama.runAction'] = function(command, ctx)
    local client = vim.lsp.get_client_by_id(ctx.client_id)
    if not client then
      return
    end
    local arg = vim.deepcopy((command.arguments or {})[1] or {})
    local function run()
      server.request(client, 'workspace/executeCommand', { command = command.command, arguments = { arg } },
        function(err)
          if err then
            vim.notify('Code Llama: ' .. tostring(err.message), vim.log.levels.WARN)
          end
        end, ctx.bufnr)
    end
    if arg.action == 'ask' and not arg.question then
      vim.ui.input({ prompt = 'Ask Code Llama: ' }, function(question)
        if question and question ~= '' then
          arg.question = question
          run()
        end
      end)
    else
      run()
    end
  end
end

--- Configures the plugin and starts the server for matching buffers (already open ones included).
---@param opts? codellama.Options
function M.setup(opts)
  local options = config.resolve(opts)
  if vim.fn.has('nvim-0.10') ~= 1 then
    vim.notify('codellama: Neovim 0.10 or newer is required', vim.log.levels.ERROR)
    return
  end
  config.options = options
  M.mode = config.ghost_mode(options.ghost_text)
  api.nvim_set_hl(0, 'CodellamaSuggestion', { link = 'Comment', default = true })
  api.nvim_set_hl(0, 'CodellamaSuggestionInfo', { link = 'NonText', default = true })
  if did_setup then
    -- Called again: apply the new settings to running servers.
    server.push_settings(options)
  end
  did_setup = true
  set_keymaps(options.keymaps)
  register_action_command()
  local group = api.nvim_create_augroup('codellama', { clear = true })
  api.nvim_create_autocmd('FileType', {
    group = group,
    callback = function(ev)
      M.attach(ev.buf)
    end,
  })
  require('codellama.retry').setup(group, function(bufnr)
    M.trigger(bufnr)
  end)
  api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == server.name then
        attached[ev.buf] = nil
      end
    end,
  })
  for _, bufnr in ipairs(api.nvim_list_bufs()) do
    if api.nvim_buf_is_loaded(bufnr) and vim.bo[bufnr].filetype ~= '' then
      M.attach(bufnr)
    end
  end
end

--- The options in effect (for :checkhealth).
function M.options()
  return config.options, did_setup
end

return M
