-- Options for require("codellama").setup(), with their defaults.
local M = {}

---@class codellama.Keymaps
---@field accept string|false        accept the whole suggestion (falls back to the key's normal action)
---@field accept_word string|false
---@field accept_line string|false
---@field dismiss string|false
---@field next string|false
---@field prev string|false
---@field trigger string|false       ask for a suggestion now

---@class codellama.Options
---@field cmd? string[]|function      server command; default: <python> -m lsp_server
---@field python? string              interpreter for the default command
---@field init_options table           `codellama` settings (lsp_server/README.md), camelCase keys
---@field filetypes? string[]         nil: every file buffer except `exclude_filetypes`
---@field exclude_filetypes string[]
---@field root_markers string[]       the first directory upwards with one of these is the root
---@field ghost_text "auto"|"builtin"|"virtual_text"|false
---@field debounce_ms integer         wait after a keystroke before asking (virtual_text mode)
---@field keymaps codellama.Keymaps|false
---@field builtin_completion boolean  also enable vim.lsp.completion (Neovim 0.11+) for the server
---@field on_attach? fun(client: vim.lsp.Client, bufnr: integer)

---@type codellama.Options
M.defaults = {
  cmd = nil,
  python = nil,
  init_options = {},
  filetypes = nil,
  exclude_filetypes = { 'help', 'gitcommit', 'gitrebase', 'qf', 'netrw', 'lazy', 'mason', 'TelescopePrompt' },
  root_markers = { '.git', 'pyproject.toml', 'setup.py', 'package.json', 'Cargo.toml', 'go.mod', 'Makefile' },
  ghost_text = 'auto',
  debounce_ms = 150,
  keymaps = {
    accept = '<Tab>',
    accept_word = '<M-Right>',
    accept_line = '<M-C-Right>',
    dismiss = '<C-]>',
    next = '<M-]>',
    prev = '<M-[>',
    trigger = '<M-\\>',
  },
  builtin_completion = false,
  on_attach = nil,
}

---@type codellama.Options
M.options = vim.deepcopy(M.defaults)

--- Merges user options over the defaults and checks their types (errors name the bad key).
---@param opts? table
---@return codellama.Options
function M.resolve(opts)
  opts = opts or {}
  if opts.cmd ~= nil and type(opts.cmd) ~= 'table' and type(opts.cmd) ~= 'function' then
    error('codellama: option cmd must be a list of strings (or a function, as vim.lsp.start allows)', 0)
  end
  local expected = {
    python = 'string',
    init_options = 'table',
    filetypes = 'table',
    exclude_filetypes = 'table',
    root_markers = 'table',
    debounce_ms = 'number',
    on_attach = 'function',
    builtin_completion = 'boolean',
  }
  for key, kind in pairs(expected) do
    if opts[key] ~= nil and type(opts[key]) ~= kind then
      error(('codellama: option %s must be a %s, got %s'):format(key, kind, type(opts[key])), 0)
    end
  end
  local ghost = opts.ghost_text
  if ghost ~= nil and ghost ~= false and ghost ~= 'auto' and ghost ~= 'builtin' and ghost ~= 'virtual_text' then
    error('codellama: option ghost_text must be "auto", "builtin", "virtual_text" or false, got ' .. vim.inspect(ghost), 0)
  end
  local merged = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts)
  -- Lists replace the defaults rather than merging index by index.
  for _, key in ipairs({ 'cmd', 'filetypes', 'exclude_filetypes', 'root_markers' }) do
    if opts[key] ~= nil then
      merged[key] = opts[key]
    end
  end
  if opts.keymaps == false then
    merged.keymaps = false
  end
  return merged
end

--- Which ghost-text implementation runs: Neovim 0.12's vim.lsp.inline_completion, or the plugin's own
--- extmark renderer (0.10/0.11, or when asked for).
---@param ghost "auto"|"builtin"|"virtual_text"|false
---@return "builtin"|"virtual_text"|false
function M.ghost_mode(ghost)
  local has_builtin = vim.lsp.inline_completion ~= nil
    and type(vim.lsp.inline_completion.enable) == 'function'
    and type(vim.lsp.inline_completion.get) == 'function'
  if ghost == false then
    return false
  elseif ghost == 'builtin' then
    if not has_builtin then
      vim.notify('codellama: vim.lsp.inline_completion needs Neovim 0.12; using virtual text', vim.log.levels.WARN)
      return 'virtual_text'
    end
    return 'builtin'
  elseif ghost == 'virtual_text' then
    return 'virtual_text'
  end
  return has_builtin and 'builtin' or 'virtual_text'
end

return M
