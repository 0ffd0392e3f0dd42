-- Nothing lost while the model loads: a suggestion asked for before the server's model was ready is
-- answered with nothing. When the model becomes ready, ask again, once, if the user still waits where
-- they asked (same buffer, same text, same cursor, still in Insert mode).
local server = require('codellama.server')

local api = vim.api
local M = {}

---@class codellama.Spot
---@field bufnr integer
---@field changedtick integer
---@field cursor integer[]

--- Per client: where the last suggestion was asked for while its model was not ready.
---@type table<integer, codellama.Spot?>
local waiting = {}

---@param bufnr integer
---@return codellama.Spot?
local function spot(bufnr)
  if bufnr ~= api.nvim_get_current_buf() then
    return nil
  end
  return { bufnr = bufnr, changedtick = api.nvim_buf_get_changedtick(bufnr), cursor = api.nvim_win_get_cursor(0) }
end

local function same(a, b)
  return a ~= nil and b ~= nil and a.bufnr == b.bufnr and a.changedtick == b.changedtick
    and a.cursor[1] == b.cursor[1] and a.cursor[2] == b.cursor[2]
end

--- Remembers (or forgets) the spot of an inline completion request sent to one of our clients.
---@param client_id integer
---@param bufnr integer
function M.requested(client_id, bufnr)
  waiting[client_id] = not server.ready(client_id) and spot(bufnr) or nil
end

--- The model of the client became ready: `trigger(bufnr)` if the user still waits where they asked.
---@param client_id integer
---@param trigger fun(bufnr: integer)
function M.ready(client_id, trigger)
  local asked = waiting[client_id]
  waiting[client_id] = nil
  if not asked then
    return
  end
  vim.schedule(function()
    if api.nvim_get_mode().mode:sub(1, 1) == 'i' and api.nvim_buf_is_valid(asked.bufnr) and same(asked, spot(asked.bufnr)) then
      trigger(asked.bufnr)
    end
  end)
end

--- Watches the inline completion requests of codellama clients (any Neovim version's, and the plugin's).
---@param group integer augroup
---@param trigger fun(bufnr: integer)
function M.setup(group, trigger)
  api.nvim_create_autocmd('LspRequest', {
    group = group,
    callback = function(ev)
      local request = ev.data and ev.data.request
      if not request or request.type ~= 'pending' or request.method ~= 'textDocument/inlineCompletion' then
        return
      end
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == server.name then
        M.requested(client.id, ev.buf)
      end
    end,
  })
  server.on_ready = function(client_id)
    M.ready(client_id, trigger)
  end
end

return M
