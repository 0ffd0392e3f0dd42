-- :checkhealth codellama — the server command, its Python, and what the running server reports.
local M = {}

local health = vim.health

local function run(cmd)
  local ok, result = pcall(function()
    return vim.system(cmd, { text = true }):wait(20000)
  end)
  if not ok then
    return nil, tostring(result)
  end
  return result
end

function M.check()
  health.start('codellama: Neovim')
  if vim.fn.has('nvim-0.10') == 1 then
    health.ok('Neovim ' .. tostring(vim.version()))
  else
    health.error('Neovim 0.10 or newer is required')
  end
  local codellama = require('codellama')
  local opts, did_setup = codellama.options()
  if not did_setup then
    health.warn('require("codellama").setup() has not been called', { 'Add require("codellama").setup({}) to your config' })
  end
  if codellama.mode == 'builtin' then
    health.ok('Ghost text: vim.lsp.inline_completion (Neovim 0.12)')
  elseif codellama.mode == 'virtual_text' then
    health.ok('Ghost text: the plugin\'s extmark renderer')
  else
    health.info('Ghost text: off (ghost_text = false)')
  end

  health.start('codellama: language server')
  local server = require('codellama.server')
  local root = server.root_dir(0, opts.root_markers)
  local cmd, source = server.resolve_cmd(opts, root)
  if type(cmd) ~= 'table' then
    health.info('Server command: a Lua function (from the cmd option)')
  else
    health.info(('Server command: `%s` (from the %s)'):format(table.concat(cmd, ' '), source))
  end
  if type(cmd) ~= 'table' then
    -- an in-process server: nothing to check on disk
  elseif vim.fn.executable(cmd[1]) ~= 1 then
    health.error(cmd[1] .. ' is not executable', { 'Set `python` or `cmd` in setup(), or run `make install` in the repository' })
  elseif cmd[2] == '-m' and cmd[3] == 'lsp_server' then
    local python = cmd[1]
    local probe = run({
      python,
      '-c',
      'import sys, lsp_server, engine; print(sys.version.split()[0]); print(engine.default_model_dir())',
    })
    if probe and probe.code == 0 then
      local lines = vim.split(vim.trim(probe.stdout), '\n')
      health.ok(('Python %s at %s can import lsp_server'):format(lines[1] or '?', python))
      local model = (opts.init_options or {}).model
      if model and model ~= vim.NIL and model ~= '' then
        health.info('Model (init_options.model): ' .. model)
      elseif lines[2] then
        local exists = vim.uv.fs_stat(lines[2]) ~= nil
        if exists then
          health.ok('Default model: ' .. lines[2])
        else
          health.warn('Default model directory not found: ' .. lines[2], { 'Set init_options.model to a model directory' })
        end
      end
    else
      local err = probe and vim.trim(probe.stderr or '') or 'could not run it'
      health.error(('%s cannot import lsp_server: %s'):format(python, err:match('[^\n]*$') or err), {
        'Run `make install` in the codellama-local repository and point `python` at its .venv/bin/python',
      })
    end
  end

  local clients = server.clients()
  if #clients == 0 then
    health.info('No codellama client is running (open a file of a configured filetype)')
  end
  for _, client in ipairs(clients) do
    local status = server.status[client.id]
    local response = server.request_sync(client, 'codellama/getStatus', vim.NIL, 3000)
    if response and response.result then
      status = response.result
    end
    local root_dir = client.root_dir or (client.config and client.config.root_dir) or '?'
    if not status then
      health.warn(('Client %d (%s): no status from the server yet'):format(client.id, root_dir))
    else
      local function field(key)
        local v = status[key]
        return (v == nil or v == vim.NIL) and '?' or tostring(v)
      end
      local line = ('Client %d (%s): %s, model %s, device %s, dtype %s, quantization %s, KV cache %s, backend %s'):format(
        client.id,
        root_dir,
        field('state'),
        field('model'),
        field('device'),
        field('dtype'),
        field('quantization'),
        field('kvCacheDtype'),
        field('backend')
      )
      if status.state == 'error' then
        health.error(line .. ': ' .. field('message'))
      elseif status.state == 'ready' then
        health.ok(line)
      else
        health.info(line)
      end
    end
  end
end

return M
